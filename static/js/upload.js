// Knowledge base uploads: drag-and-drop several files, one progress bar per file for the upload (XHR progress)
// and then for processing (document.progress events from /ws/events/, with polling of the documents API as the
// fallback while the socket is down). Everything it calls is the public knowledge API.
(function () {
  "use strict";
  var root = document.getElementById("uploader");
  if (!root) return;
  var kb = root.getAttribute("data-kb");
  var uploadUrl = root.getAttribute("data-upload-url");
  var zone = document.getElementById("dropzone");
  var input = document.getElementById("file-input");
  var list = document.getElementById("upload-list");
  var tracked = {};  // document id -> row
  var pollTimer = null;
  var csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

  function row(name) {
    var li = document.createElement("li");
    li.innerHTML = '<div class="name"><span class="file"></span><span class="pct">0%</span></div>' +
      '<progress max="100" value="0"></progress><div class="stage" role="status">Uploading…</div>';
    li.querySelector(".file").textContent = name;
    li.querySelector("progress").setAttribute("aria-label", "Progress of " + name);
    list.appendChild(li);
    return li;
  }
  function show(li, percent, stage, state) {
    var bar = li.querySelector("progress");
    bar.value = percent;
    li.querySelector(".pct").textContent = Math.round(percent) + "%";
    if (stage) li.querySelector(".stage").textContent = stage;
    if (state) li.setAttribute("data-state", state);
  }

  function upload(file) {
    var li = row(file.name);
    var form = new FormData();
    form.append("files", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    // Upload is the first half of the bar; processing the second.
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) show(li, (e.loaded / e.total) * 50, "Uploading… " + Math.round(100 * e.loaded / e.total) + "%");
    };
    xhr.onload = function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status >= 400) {
        var detail = (body.errors && body.errors[0] && body.errors[0].detail) || body.detail || "The upload failed.";
        return show(li, 0, detail, "failed");
      }
      var doc = (body.documents || [])[0];
      if (!doc && (body.unchanged || []).length) return show(li, 100, "Unchanged: already in the knowledge base.", "ready");
      if (!doc) return show(li, 0, ((body.errors || [])[0] || {}).detail || "Not accepted.", "failed");
      li.setAttribute("data-document", doc.id);
      tracked[doc.id] = li;
      update(doc);
      ensurePolling();
    };
    xhr.onerror = function () { show(li, 0, "Network error: the file was not uploaded.", "failed"); };
    xhr.send(form);
  }

  // A document's state from an event or the API -> its bar.
  function updateRow(doc) {
    // Documents added elsewhere (another tab, the API) move in the table too.
    var tr = document.querySelector('#documents tr[data-document="' + (doc.document_id || doc.id) + '"]');
    if (!tr) return;
    var bar = tr.querySelector("progress");
    if (bar) bar.value = doc.progress || 0;
    if (doc.status !== tr.getAttribute("data-status") && (doc.status === "ready" || doc.status === "failed")) {
      tr.setAttribute("data-status", doc.status);
      refreshTable();
    }
  }
  function update(doc) {
    var li = tracked[doc.document_id || doc.id];
    if (!li) return updateRow(doc);
    if (li.getAttribute("data-state") === "ready") return;
    if (doc.status === "ready") {
      show(li, 100, "Ready" + (doc.chunk_count ? ": " + doc.chunk_count + " passages" : "") + ".", "ready");
      refreshTable();
    } else if (doc.status === "failed") {
      show(li, 100, "Failed: " + (doc.error || "could not be processed."), "failed");
      li.querySelector("progress").classList.add("failed");
      refreshTable();
    } else {
      var progress = doc.progress || 0;
      show(li, 50 + progress / 2, "Processing" + (doc.stage ? " (" + doc.stage + ")" : "") + "… " + progress + "%", "processing");
    }
  }
  function pending() {
    return Object.keys(tracked).filter(function (id) {
      var s = tracked[id].getAttribute("data-state");
      return s !== "ready" && s !== "failed";
    });
  }
  function poll() {
    pollTimer = null;
    if (!pending().length) return;
    fetch(uploadUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { results: [] }; })
      .then(function (body) { (body.results || []).forEach(update); })
      .catch(function () { /* try again */ })
      .then(ensurePolling);
  }
  function ensurePolling() {
    // Events drive the bars; a slow poll is the safety net (the socket may be down or reconnecting).
    if (!pollTimer && pending().length) pollTimer = setTimeout(poll, root.getAttribute("data-live") === "ws" ? 3000 : 1000);
  }
  var refreshQueued = null;
  function refreshTable() {
    clearTimeout(refreshQueued);
    refreshQueued = setTimeout(function () {
      if (!window.htmx) return;
      window.htmx.ajax("GET", location.pathname, { target: "#docs-section", select: "#docs-section", swap: "outerHTML" });
      window.htmx.ajax("GET", location.pathname, { target: "#kb-version", select: "#kb-version", swap: "outerHTML" });
    }, 300);
  }

  if (window.AgentryLive) {
    window.AgentryLive.subscribe("kb." + kb, function (event) {
      if (event.type === "document.progress" || event.type === "document.status") update(event.data);
    }, function (state) { root.setAttribute("data-live", state === "live" ? "ws" : "poll"); });
  }

  function add(files) { Array.prototype.forEach.call(files, upload); }
  input.addEventListener("change", function () { add(input.files); input.value = ""; });
  zone.addEventListener("keydown", function (e) {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (e) { if (e.dataTransfer && e.dataTransfer.files) add(e.dataTransfer.files); });
  root.setAttribute("data-ready", "true");
})();
