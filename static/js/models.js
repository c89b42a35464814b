// Models page: "Test connection" on a saved connection answers in place (ok and latency, or the error) instead of
// reloading the page. Without JavaScript the same form posts and the result comes back as a message.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-test-connection]");
    if (!form || !window.fetch) return;
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    var output = form.querySelector("output");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    output.className = "connection-result";
    output.textContent = "Testing…";
    fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().catch(function () {
          return { ok: false, message: "The server answered with HTTP " + response.status + "." };
        });
      })
      .then(function (result) {
        output.className = "connection-result " + (result.ok ? "ok" : "err");
        output.textContent = (result.ok ? "Works: " : "Failed: ") + result.message;
      })
      .catch(function () {
        output.className = "connection-result err";
        output.textContent = "Failed: the page could not reach the server.";
      })
      .then(function () {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      });
  });
})();
