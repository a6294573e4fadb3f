// The warning before a signed-in session ends (issue 15): the server ends a session idle for
// data-session-idle seconds (iwrs.auth); this counts the same time down in the page, warns
// WARN seconds before the end with a "Stay signed in" button (a request restarts the idle
// clock), and at the end asks for this page again: the server, finding the session ended,
// shows the sign-in page, which brings the person back here (its `next`).
// Any request the page makes (the eligibility draft's autosave) restarts the count too.
(function () {
  "use strict";
  var body = document.body;
  var idle = parseInt(body.getAttribute("data-session-idle") || "0", 10);
  if (!idle) { return; }
  var WARN = Math.min(120, Math.floor(idle / 3));
  var GRACE = 5;  // seconds after the server's limit: never ask before it has ended
  var deadline = Date.now() + (idle + GRACE) * 1000;
  var banner = null;

  function csrf() {
    var field = document.querySelector("input[name=csrf_token]");
    return field ? field.value : "";
  }

  function restart() {
    deadline = Date.now() + (idle + GRACE) * 1000;
    if (banner) { banner.hidden = true; }
  }
  window.iwrsSessionRestarted = restart;

  function stay() {
    fetch(body.getAttribute("data-alive"), {
      method: "POST", credentials: "same-origin", redirect: "manual",
      headers: {"X-CSRFToken": csrf()}
    }).then(function (response) {
      if (response.status === 204) { restart(); } else { expired(); }
    });
  }

  function expired() {
    window.location.assign(window.location.pathname + window.location.search);
  }

  function show(seconds) {
    if (!banner) {
      banner = document.createElement("div");
      banner.className = "session-warning";
      banner.setAttribute("role", "alert");
      var text = document.createElement("span");
      text.className = "session-warning-text";
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Stay signed in";
      button.addEventListener("click", stay);
      banner.appendChild(text);
      banner.appendChild(document.createTextNode(" "));
      banner.appendChild(button);
      document.querySelector("main").prepend(banner);
    }
    banner.hidden = false;
    var minutes = Math.floor(seconds / 60), rest = seconds % 60;
    banner.querySelector(".session-warning-text").textContent =
      "Your session ends in " + minutes + ":" + (rest < 10 ? "0" : "") + rest +
      " without activity. Drafts are kept; anything typed after it ends is not.";
  }

  setInterval(function () {
    var left = Math.round((deadline - Date.now()) / 1000);
    if (left <= 0) { expired(); return; }
    if (left <= WARN + GRACE) { show(Math.max(0, left - GRACE)); }
  }, 1000);
}());
