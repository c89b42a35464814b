// Live events from the event bus (/ws/events/), shared by the pages that show progress.
// AgentryLive.subscribe(topic, onEvent) -> {close()}; reconnects with backoff; reports whether it is connected
// through onState("live" | "offline") so pages can fall back to polling while the socket is down.
(function () {
  "use strict";
  function subscribe(topic, onEvent, onState) {
    var socket = null, closed = false, attempt = 0, timer = null;
    onState = onState || function () {};
    function connect() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      try {
        socket = new WebSocket(scheme + location.host + "/ws/events/?topics=" + encodeURIComponent(topic));
      } catch (e) { onState("offline"); return retry(); }
      socket.onopen = function () {
        attempt = 0;
        onState("live");
      };
      socket.onmessage = function (message) {
        var event;
        try { event = JSON.parse(message.data); } catch (e) { return; }
        if (event && event.type && event.data) onEvent(event);
      };
      socket.onclose = function () { onState("offline"); if (!closed) retry(); };
      socket.onerror = function () { /* onclose follows; the page keeps polling meanwhile */ };
    }
    function retry() {
      attempt += 1;
      timer = setTimeout(connect, Math.min(30000, 500 * Math.pow(2, attempt)));
    }
    connect();
    return { close: function () { closed = true; clearTimeout(timer); if (socket) socket.close(); } };
  }
  window.AgentryLive = { subscribe: subscribe };
})();
