// The eligibility draft (issue 15): the assessment form is posted to its draft address
// (data-draft-url) a moment after the investigator stops typing, with the page's CSRF token, so
// that a session ending mid-entry loses nothing. The draft is not an assessment.
(function () {
  "use strict";
  var form = document.querySelector("form[data-draft-url]");
  if (!form) { return; }
  var status = form.querySelector(".draft-status");
  var timer = null;
  var DELAY = 1500;

  function say(text) { if (status) { status.textContent = text; } }

  function save() {
    timer = null;
    var data = new URLSearchParams(new FormData(form));
    fetch(form.getAttribute("data-draft-url"), {
      method: "POST", body: data, credentials: "same-origin", redirect: "manual",
      headers: {"X-CSRFToken": data.get("csrf_token") || ""}
    }).then(function (response) {
      if (response.ok) {
        say("Draft saved.");
        if (window.iwrsSessionRestarted) { window.iwrsSessionRestarted(); }
      } else {
        say("The draft could not be saved (signed out?): sign in again before going on.");
      }
    }).catch(function () { say("The draft could not be saved: no connection."); });
  }

  function later() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(save, DELAY);
  }
  form.addEventListener("input", later);
  form.addEventListener("change", later);
}());
