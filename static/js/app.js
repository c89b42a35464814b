// Small progressive enhancements shared by every page. Pages work without it; no framework.
(function () {
  "use strict";

  function currentTheme() {
    var explicit = document.documentElement.getAttribute("data-theme");
    if (explicit) return explicit;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  // Theme toggle: flips light/dark and remembers the choice in this browser.
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-theme-toggle]");
    if (!toggle) return;
    var next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.setAttribute("data-theme", next);
    try { window.localStorage.setItem("agentry-theme", next); } catch (e) { /* storage disabled */ }
    toggle.setAttribute("aria-label", "Switch to " + (next === "dark" ? "light" : "dark") + " theme");
  });

  // Copy buttons: <button data-copy="#element-id">. Falls back to selecting the text.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    var done = function () {
      button.textContent = "Copied";
      button.setAttribute("aria-live", "polite");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text.trim()).then(done, function () { source.select && source.select(); });
    } else {
      if (source.select) source.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* user copies by hand */ }
    }
  });

  // Saving the profile's theme replaces this browser's toggle choice.
  document.addEventListener("submit", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-clear-theme")) {
      try { window.localStorage.removeItem("agentry-theme"); } catch (e) { /* storage disabled */ }
    }
  });

  // Confirm dangerous actions: <form data-confirm="Really delete?">.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // Filters that apply as soon as they change: <select data-autosubmit> (the form still has a button without JS).
  document.addEventListener("change", function (event) {
    var control = event.target;
    if (control.hasAttribute && control.hasAttribute("data-autosubmit") && control.form) control.form.requestSubmit();
  });

  // htmx errors: show a readable message instead of failing silently.
  document.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("htmx-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "htmx-error";
      box.className = "flash error";
      box.setAttribute("role", "alert");
      document.getElementById("main").prepend(box);
    }
    var status = event.detail.xhr.status;
    box.textContent = status === 403 ? "You don't have permission to do that." :
      status === 404 ? "That item no longer exists." :
      status >= 500 ? "Something went wrong on our side. Please try again." :
      "That didn't work. Check the form and try again.";
  });
})();
