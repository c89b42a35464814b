// Chat page: token streaming over the agent WebSocket (/ws/agents/{id}/chat/), with automatic resume after a
// dropped connection, and fallbacks when WebSocket is unavailable: Server-Sent Events, then long-polling
// (/api/v1/runs/{id}/events/). Every event carries a sequence number; an event is shown only if its seq is
// above the last one shown, so a resume never loses or repeats a token. Plain JS, no framework.
(function () {
  "use strict";
  var root = document.getElementById("chat");
  if (!root) return;
  var EVENT_TYPES = ["run.queued", "message.start", "token", "citation", "tool.call", "tool.result", "message.end", "error"];
  var agentId = root.getAttribute("data-agent");
  var conversationId = root.getAttribute("data-conversation") || null;
  var pane = document.getElementById("messages");
  var statusLine = document.getElementById("chat-status");
  var form = document.getElementById("composer");
  var input = document.getElementById("chat-input");
  var sendButton = document.getElementById("send");
  var stopButton = document.getElementById("stop");
  var regenerateButton = document.getElementById("regenerate");
  var dialog = document.getElementById("passage-dialog");
  var csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

  var mode = "ws";  // "ws" -> "sse" -> "poll", only ever downgraded
  var socket = null;
  var socketOpen = false;
  var failedOpens = 0;
  var queued = null;  // a chat message waiting for the socket
  var run = null;  // the answer being streamed: {id, after, el, body, text, done, alt}
  var lastQuestion = null;
  var lastAnswer = null;  // the latest turn's answer element: the one Regenerate adds an alternative to

  function setStatus(text) { statusLine.textContent = text || ""; }
  function setMode(next) {
    mode = next;
    root.setAttribute("data-transport", next);
  }
  setMode("ws");

  // --- rendering ------------------------------------------------------------------------------------
  function clearEmpty() {
    var empty = document.getElementById("chat-empty");
    if (empty) empty.remove();
  }
  // An answer element holds its turn's alternatives (el.alternatives, one per Regenerate) and shows one of them
  // (el.shown): its body, steps, citations and note. Answers arrive as plain text while they stream, then as the
  // server's Markdown rendering (agents.rendering: sanitised there, so it is inserted as is).
  var ANSWER_PARTS = '<ol class="steps" hidden></ol><div class="body"></div><p class="note" hidden></p>' +
    '<div class="citations"></div><div class="answer-tools">' +
    '<span class="alternatives" role="group" aria-label="Alternative answers" hidden>' +
    '<button type="button" class="outline secondary alt-prev" aria-label="Previous answer">\u2039</button>' +
    '<span class="alt-count" aria-live="polite"></span>' +
    '<button type="button" class="outline secondary alt-next" aria-label="Next answer">\u203a</button></span>' +
    '<button type="button" class="outline secondary copy-answer" hidden>Copy answer</button></div>';
  function bubble(role, text) {
    clearEmpty();
    var el = document.createElement("div");
    el.className = "msg " + role;
    if (role === "assistant") {
      el.innerHTML = ANSWER_PARTS;
      el.alternatives = [];
      el.shown = 0;
    } else el.innerHTML = '<div class="body"></div>';
    el.querySelector(".body").textContent = text || "";
    pane.appendChild(el);
    pane.scrollTop = pane.scrollHeight;
    return el;
  }
  function showBody(body, alt) {
    if (alt.html) {
      body.innerHTML = alt.html;
      body.classList.add("rendered");
      Array.prototype.forEach.call(body.querySelectorAll("pre"), function (pre) {
        var copy = document.createElement("button");
        copy.type = "button";
        copy.className = "outline secondary copy-code";
        copy.textContent = "Copy";
        copy.setAttribute("aria-label", "Copy code");
        pre.prepend(copy);
      });
    } else {
      body.classList.remove("rendered");
      body.textContent = alt.content || "";
    }
  }
  function showAlternative(el, index) {
    var alt = el.alternatives[index];
    el.shown = index;
    showBody(el.querySelector(".body"), alt);
    var steps = el.querySelector(".steps");
    steps.innerHTML = "";
    steps.hidden = true;
    (alt.tool_calls || []).forEach(function (call) { addStep(el, "Used " + (call.name || "a tool"), call.id); });
    el.querySelector(".citations").innerHTML = "";
    (alt.citations || []).forEach(function (c) { addCitation(el, c); });
    var note = el.querySelector(".note");
    note.hidden = !alt.note;
    note.textContent = alt.note || "";
    note.className = "note " + (alt.status === "stopped" ? "muted" : "error");
    if (alt.note) note.setAttribute("role", alt.status === "stopped" ? "status" : "alert");
    el.setAttribute("data-status", alt.status);
    if (alt.id) el.setAttribute("data-message", alt.id); else el.removeAttribute("data-message");
    updateTools(el);
  }
  function updateTools(el) {
    var streaming = run && !run.done && run.el === el;
    var count = el.alternatives.length;
    var switcher = el.querySelector(".alternatives");
    switcher.hidden = count < 2 || streaming;
    el.querySelector(".alt-count").textContent = (el.shown + 1) + "/" + count;
    el.querySelector(".alt-prev").disabled = el.shown === 0;
    el.querySelector(".alt-next").disabled = el.shown === count - 1;
    var alt = el.alternatives[el.shown];
    el.querySelector(".copy-answer").hidden = streaming || !(alt && alt.content);
  }
  // "p. 12 · Installation › Upgrading" (knowledge.models.passage_location builds the same label).
  function passageLocation(c) {
    var parts = [];
    if (c.page_start != null) {
      parts.push(c.page_end == null || c.page_end === c.page_start ? "p. " + c.page_start : "pp. " + c.page_start + "\u2013" + c.page_end);
    }
    if (c.section_path && c.section_path.length) parts.push(c.section_path.join(" \u203a "));
    return parts.join(" \u00b7 ");
  }
  function addCitation(el, c) {
    var box = el.querySelector(".citations");
    if (box.querySelector('[data-n="' + c.n + '"]')) return;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "outline secondary citation";
    button.setAttribute("data-n", c.n);
    button.setAttribute("data-kb", c.knowledge_base_id);
    button.setAttribute("data-document", c.document_id);
    button.setAttribute("data-position", c.position);
    var where = passageLocation(c);
    button.textContent = "[" + c.n + "] " + (c.document_title || "source") + (where ? " \u00b7 " + where : "");
    button.title = c.snippet || "";
    box.appendChild(button);
  }
  function addStep(el, text, id) {
    var steps = el.querySelector(".steps");
    steps.hidden = false;
    var li = id && steps.querySelector('[data-call="' + id + '"]');
    if (!li) {
      li = document.createElement("li");
      if (id) li.setAttribute("data-call", id);
      steps.appendChild(li);
    }
    li.textContent = text;
  }
  function renderStored(message) {
    if (message.role === "user") {
      bubble("user", message.content);
      lastQuestion = message.content;
      return;
    }
    var el = bubble("assistant", "");
    el.alternatives = message.alternatives;
    lastAnswer = el;
    var newest = el.alternatives[el.alternatives.length - 1];
    if (newest.status === "streaming" && newest.run_id) {
      // Still being written (e.g. the page was reloaded mid-answer): replay from the start.
      newest.content = "";
      startRun(el, newest).id = newest.run_id;
    }
    showAlternative(el, el.alternatives.length - 1);
  }

  // --- one run -------------------------------------------------------------------------------------
  function startRun(el, alt) {
    run = { id: null, after: 0, el: el, body: el.querySelector(".body"), text: "", done: false, alt: alt };
    el.classList.add("streaming");
    el.setAttribute("data-status", "streaming");
    sendButton.disabled = true;
    stopButton.hidden = false;
    regenerateButton.hidden = true;
    return run;
  }
  function finish(status, note) {
    if (!run || run.done) return;
    run.done = true;
    run.el.classList.remove("streaming");
    run.alt.status = status;
    run.alt.note = note || "";
    if (run.el.alternatives[run.el.shown] === run.alt) showAlternative(run.el, run.el.shown);
    if (run.alt.id) loadRendered(run.el, run.alt);
    sendButton.disabled = false;
    stopButton.hidden = true;
    regenerateButton.hidden = !lastQuestion;
    setStatus("");
    input.focus();
  }
  function accepted(handles) {
    if (!run) return;
    run.id = handles.run_id;
    run.alt.id = handles.message_id;
    run.el.setAttribute("data-run", handles.run_id);
    if (handles.conversation_id && handles.conversation_id !== conversationId) {
      conversationId = handles.conversation_id;
      root.setAttribute("data-conversation", conversationId);
      var url = new URL(location.href);
      url.searchParams.set("c", conversationId);
      history.replaceState(null, "", url);
      addConversation(conversationId, lastQuestion);
    }
    if (mode === "sse") streamSSE(run);
    else if (mode === "poll") poll(run);
  }
  function addConversation(id, title) {
    // The new conversation appears in the side list right away, current.
    var list = document.querySelector(".conversation-list");
    if (!list) return;
    var placeholder = list.querySelector("li.muted");
    if (placeholder) placeholder.remove();
    Array.prototype.forEach.call(list.querySelectorAll("a[aria-current]"), function (a) { a.removeAttribute("aria-current"); });
    var li = document.createElement("li");
    var a = document.createElement("a");
    a.href = "?c=" + encodeURIComponent(id);
    a.setAttribute("aria-current", "page");
    a.textContent = (title || "Untitled").slice(0, 40);
    li.appendChild(a);
    list.prepend(li);
  }
  function handle(event) {
    if (!run || run.done || event.run_id !== run.id) return;
    if (typeof event.seq !== "number" || event.seq <= run.after) return;  // exactly once, whatever the transport
    run.after = event.seq;
    root.setAttribute("data-last-seq", String(event.seq));
    var data = event.data || {};
    if (event.type === "token") {
      run.tokens = (run.tokens || 0) + 1;
      run.el.setAttribute("data-tokens", String(run.tokens));
      run.text += data.text || "";
      run.alt.content = run.text;
      run.body.textContent = run.text;
      pane.scrollTop = pane.scrollHeight;
    } else if (event.type === "run.queued") {  // the chat pool is full; show the place in line
      if (!run.text) run.body.textContent = "Waiting for a free worker (position " + data.position + ")…";
    } else if (event.type === "message.start") {
      if (!run.text) run.body.textContent = "";  // clear the queue notice
    } else if (event.type === "citation") {
      run.alt.citations.push(data);
      addCitation(run.el, data);
    } else if (event.type === "tool.call") {
      run.alt.tool_calls.push({ id: data.id, name: data.name });
      addStep(run.el, "Calling " + data.name + "…", data.id);
    } else if (event.type === "tool.result") {
      addStep(run.el, (data.ok === false ? "✗ " : "✓ ") + data.name, data.id);
    } else if (event.type === "error") {
      run.error = data.detail || "The answer could not be completed.";
    } else if (event.type === "message.end") {
      if (data.status === "cancelled") finish("stopped", "Stopped.");
      else finish(data.status === "complete" ? "complete" : "incomplete", run.error);
    }
  }
  function loadRendered(el, alt) {
    // The stored answer, rendered by the server: its Markdown as sanitised HTML and exactly the citations it kept.
    if (!conversationId) return;
    var url = "/api/v1/conversations/" + encodeURIComponent(conversationId) + "/messages/?after=" + (alt.id - 1);
    fetch(url, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    }).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    }).then(function (body) {
      var stored = (body.results || []).filter(function (m) { return m.id === alt.id; })[0];
      if (!stored) return;
      alt.content = stored.content;
      alt.html = stored.content_html;
      alt.citations = stored.citations || [];
      alt.tool_calls = stored.tool_calls || [];
      if (el.alternatives[el.shown] === alt) showAlternative(el, el.shown);
    }).catch(function () { /* the plain text stays: still the whole answer */ });
  }
  function startFailed(data) {
    if (!run) return;
    finish("failed", (data && data.detail) || "The message could not be sent.");
  }

  // --- transport 1: WebSocket -----------------------------------------------------------------------
  function connect() {
    if (mode !== "ws") return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var opened = false;
    try {
      socket = new WebSocket(scheme + location.host + "/ws/agents/" + agentId + "/chat/");
    } catch (e) {
      return downgrade();
    }
    socket.onopen = function () {
      opened = true;
      socketOpen = true;
      failedOpens = 0;
      if (run && run.id && !run.done) {
        socket.send(JSON.stringify({ type: "resume", run_id: run.id, after: run.after }));
        root.setAttribute("data-resumes", String(Number(root.getAttribute("data-resumes") || 0) + 1));
        setStatus("");
      }
      if (queued) {
        socket.send(JSON.stringify(queued));
        queued = null;
      }
    };
    socket.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.type === "run.accepted") accepted(event);
      else if (event.type === "error" && !event.seq) startFailed(event.data);
      else handle(event);
    };
    socket.onclose = function () {
      socketOpen = false;
      socket = null;
      if (mode !== "ws") return;
      if (!opened) failedOpens += 1;
      if (failedOpens >= 2) return downgrade();
      if (run && !run.done) setStatus("Connection lost. Reconnecting…");
      setTimeout(connect, opened ? 200 : 800);
    };
  }
  function downgrade() {
    // WebSocket does not get through (proxy, firewall): use SSE, which resumes by itself.
    setMode(window.EventSource ? "sse" : "poll");
    setStatus("");
    if (queued) {
      var message = queued;
      queued = null;
      startOverHttp(message);
    } else if (run && run.id && !run.done) {
      if (mode === "sse") streamSSE(run); else poll(run);
    }
  }

  // --- transports 2 and 3: SSE, then long-polling ------------------------------------------------------
  function startOverHttp(message) {
    fetch("/api/v1/agents/" + agentId + "/chat/", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({
        message: message.message, conversation_id: message.conversation_id, regenerate: message.regenerate, wait: false,
      }),
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) return startFailed(body);
        accepted(body);
      });
    }).catch(function () { startFailed({ detail: "The server could not be reached. Try again." }); });
  }
  function streamSSE(r) {
    var source = new EventSource("/api/v1/runs/" + r.id + "/events/?after=" + r.after);
    var received = false;
    EVENT_TYPES.forEach(function (type) {
      source.addEventListener(type, function (message) {
        // The browser's own connection errors also arrive as "error" events, without data.
        if (typeof message.data !== "string") return;
        var event;
        try { event = JSON.parse(message.data); } catch (e) { return; }
        received = true;
        handle(event);
        if (r.done) source.close();
      });
    });
    source.onerror = function () {
      if (r.done || run !== r) return source.close();
      // CONNECTING: the browser resumes by itself with Last-Event-ID. CLOSED: SSE is not getting through.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        if (!received) { setMode("poll"); poll(r); } else streamSSE(r);
      }
    };
    r.close = function () { source.close(); };
  }
  function poll(r) {
    if (r.done || run !== r) return;
    fetch("/api/v1/runs/" + r.id + "/events/?after=" + r.after + "&wait=25", {
      credentials: "same-origin", headers: { Accept: "application/json" },
    }).then(function (response) {
      if (!response.ok) throw new Error(String(response.status));
      return response.json();
    }).then(function (body) {
      (body.events || []).forEach(handle);
      poll(r);
    }).catch(function () { setTimeout(function () { poll(r); }, 1500); });
  }

  // --- sending, stop, regenerate ---------------------------------------------------------------------
  function ask(text, again) {
    // again: answer the latest question once more, as another alternative of its answer (switchable, 1/2 2/2).
    var message = { type: "chat", message: text, conversation_id: conversationId };
    var el = lastAnswer;
    if (again) {
      var stored = el.alternatives.map(function (a) { return a.id; }).filter(Boolean);
      // Nothing stored (the question was refused): ask it again; the answer still joins this element.
      if (stored.length) message.regenerate = el.alternatives[el.shown].id || stored[stored.length - 1];
    } else {
      bubble("user", text);
      el = lastAnswer = bubble("assistant", "");
    }
    lastQuestion = text;
    var alt = { id: null, content: "", html: "", citations: [], tool_calls: [], status: "streaming" };
    el.alternatives.push(alt);
    startRun(el, alt);
    showAlternative(el, el.alternatives.length - 1);
    setStatus("Thinking…");
    if (mode === "ws") {
      if (socketOpen) socket.send(JSON.stringify(message));
      else { queued = message; if (!socket) connect(); }
    } else {
      startOverHttp(message);
    }
  }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || (run && !run.done)) return;
    input.value = "";
    ask(text, false);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stopButton.addEventListener("click", function () {
    if (!run || run.done) return;
    if (!run.id) {  // not accepted yet: nothing runs on the server
      if (run.close) run.close();
      finish("stopped", "Stopped.");
      return;
    }
    // The server stops the run (and the model); the stream then ends with message.end "cancelled", and what
    // was written so far stays, on screen and in the conversation.
    setStatus("Stopping…");
    stopButton.hidden = true;
    if (mode === "ws" && socketOpen) {
      socket.send(JSON.stringify({ type: "cancel", run_id: run.id }));
    } else {
      var r = run;
      fetch("/api/v1/runs/" + encodeURIComponent(r.id) + "/cancel/", {
        method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf }
      }).then(function (response) {
        if (!response.ok && r === run) { if (r.close) r.close(); finish("stopped", "Stopped."); }
      }).catch(function () { if (r === run) { if (r.close) r.close(); finish("stopped", "Stopped."); } });
    }
  });
  regenerateButton.addEventListener("click", function () {
    if (!lastQuestion || !lastAnswer || (run && !run.done)) return;
    ask(lastQuestion, true);
  });

  // --- an answer's tools: switch between alternatives, copy the answer or a code block ---------------------
  function copy(button, text) {
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    function done(ok) {
      button.textContent = ok ? "Copied" : "Copy failed";
      button.setAttribute("data-copied", ok ? "true" : "false");
      setStatus(ok ? "Copied to the clipboard." : "The browser refused to copy.");
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    if (!navigator.clipboard) return done(false);  // only on secure pages (https, localhost)
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  }
  pane.addEventListener("click", function (e) {
    var button = e.target.closest("button.alt-prev, button.alt-next, button.copy-answer, button.copy-code");
    if (!button) return;
    var el = button.closest(".msg.assistant");
    if (button.classList.contains("copy-code")) return copy(button, button.parentElement.querySelector("code").textContent);
    if (button.classList.contains("copy-answer")) return copy(button, el.alternatives[el.shown].content);
    if (run && !run.done && run.el === el) return;
    var next = el.shown + (button.classList.contains("alt-next") ? 1 : -1);
    if (next >= 0 && next < el.alternatives.length) showAlternative(el, next);
  });

  // --- citations open their source passage ---------------------------------------------------------------
  pane.addEventListener("click", function (e) {
    var button = e.target.closest("button.citation");
    if (!button) return;
    var url = "/knowledge/" + button.getAttribute("data-kb") + "/documents/" + button.getAttribute("data-document") +
      "/?chunk=" + button.getAttribute("data-position");
    document.getElementById("passage-title").textContent = button.textContent;
    var body = document.getElementById("passage-body");
    body.innerHTML = '<p aria-busy="true">Loading the passage…</p>';
    dialog.showModal();
    fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        body.innerHTML = html;
        var target = body.querySelector(".highlighted");
        if (target) { target.scrollIntoView({ block: "center" }); target.focus(); }
      })
      .catch(function () { body.textContent = "This passage is no longer available, or you cannot open it."; });
  });
  dialog.addEventListener("click", function (e) {
    if (e.target === dialog || e.target.hasAttribute("data-close-dialog")) dialog.close();
  });

  JSON.parse(document.getElementById("chat-history").textContent || "[]").forEach(renderStored);
  regenerateButton.hidden = !lastQuestion || (run && !run.done);
  connect();
  sendButton.disabled = !!(run && !run.done);
  root.setAttribute("data-ready", "true");
  input.focus();
})();
