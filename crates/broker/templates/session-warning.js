// Homeroom session warning for apps. Embed on every page of an app:
//   <script src="https://HOMEROOM/static/session-warning.js" defer
//           data-signout="https://app.example/logout"></script>
// The app's origin must be registered with Homeroom (the app's allowed origins).
// It asks Homeroom how long the browser's sign-in has left (without extending it),
// shows a warning when the tenant's warning time is reached (25 minutes idle by
// default) and signs out when the session ends (30 minutes idle by default).
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me || !me.src) { return; }
  var base = new URL(me.src).origin;
  var signout = me.getAttribute("data-signout") || "";
  var statusUrl = base + "/session/status";
  var banner = null;
  var wasActive = false;
  var timer = null;

  function schedule(seconds) {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(check, Math.max(1, seconds) * 1000);
  }

  function signOut() {
    hide();
    if (signout) { window.location.assign(signout); } else { window.location.reload(); }
  }

  function hide() {
    if (banner && banner.parentNode) { banner.parentNode.removeChild(banner); }
    banner = null;
  }

  function show(secondsLeft) {
    var minutes = Math.max(1, Math.ceil(secondsLeft / 60));
    var text = "You will be signed out in " + minutes + " minute" + (minutes === 1 ? "" : "s") +
      " because you have been away. Click \u201cStay signed in\u201d to keep working.";
    if (!banner) {
      banner = document.createElement("div");
      banner.setAttribute("role", "alertdialog");
      banner.setAttribute("aria-live", "assertive");
      banner.setAttribute("data-homeroom", "session-warning");
      banner.style.cssText = "position:fixed;left:0;right:0;top:0;z-index:2147483647;padding:12px 16px;" +
        "background:#fff3cd;color:#1f2328;border-bottom:2px solid #b58100;font:16px/1.4 system-ui,sans-serif";
      var p = document.createElement("span");
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = "Stay signed in";
      b.style.cssText = "margin-left:12px;font:inherit;padding:4px 12px";
      b.addEventListener("click", stay);
      banner.appendChild(p);
      banner.appendChild(b);
      document.body.appendChild(banner);
    }
    banner.firstChild.textContent = text;
  }

  function stay() {
    fetch(statusUrl, { method: "POST", credentials: "include", mode: "cors" })
      .then(function () { hide(); check(); })
      .catch(function () { schedule(30); });
  }

  function check() {
    fetch(statusUrl, { credentials: "include", mode: "cors", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) { schedule(60); return; }
        if (!s.active) {
          if (wasActive) { signOut(); } else { schedule(60); }
          return;
        }
        wasActive = true;
        var left = s.seconds_left;
        var warnAt = s.warn_at_seconds_left;
        if (left <= 0) { signOut(); return; }
        if (left <= warnAt) {
          show(left);
          schedule(Math.min(30, left));
        } else {
          hide();
          schedule(Math.min(60, left - warnAt));
        }
      })
      .catch(function () { schedule(60); });
  }

  check();
})();
