// Optional auto-refresh of the sandbox dashboard (the page works fully without this script).
// Reloads every 3 s while the box is ticked, unless the person is typing in a form field.
(function () {
  "use strict";
  var box = document.getElementById("auto-refresh");
  if (!box) return;
  var KEY = "minipay-sandbox-auto-refresh";
  box.checked = window.sessionStorage.getItem(KEY) === "1";
  box.addEventListener("change", function () {
    window.sessionStorage.setItem(KEY, box.checked ? "1" : "0");
  });
  window.setInterval(function () {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "SELECT") && active !== box;
    if (box.checked && !typing) window.location.replace(window.location.pathname + window.location.hash);
  }, 3000);
})();
