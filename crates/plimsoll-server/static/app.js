// Plimsoll dashboard: live refresh and the few buttons. Plain JavaScript, no build step.
(function () {
  "use strict";
  var REFRESH_MS = 5000;

  function flash(text) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.style.display = "block";
    setTimeout(function () { el.style.display = "none"; }, 3000);
  }

  // Replace <main> with a fresh copy of this page, unless the user is typing.
  function refresh() {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) return;
    fetch(window.location.href, { headers: { "X-Plimsoll-Partial": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var main = document.querySelector("main");
        if (main) main.innerHTML = html;
      })
      .catch(function () { /* keep the last view; try again next time */ });
  }

  // Buttons with data-action="POST /v1/..." call the API (the login cookie
  // authenticates; it is SameSite=Strict, so other sites cannot).
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    var parts = button.dataset.action.split(" ");
    button.disabled = true;
    fetch(parts[1], {
      method: parts[0],
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: button.dataset.body || (parts[0] === "POST" ? "{}" : undefined)
    })
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (j) { return [r, j]; }); })
      .then(function (rj) {
        var r = rj[0], j = rj[1];
        flash(r.ok ? (button.dataset.done || "Done") : ((j.error && j.error.message) || ("Failed: " + r.status)));
        refresh();
      })
      .catch(function () { flash("The server did not answer"); button.disabled = false; });
  });

  setInterval(refresh, REFRESH_MS);
})();
