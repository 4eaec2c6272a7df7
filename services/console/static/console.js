// Instants are served in UTC inside <time datetime="...">; shown here in the viewer's own time
// zone (the UTC time stays in the tooltip). Runs again after htmx swaps part of a page.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short"
  });
  function localize(root) {
    var times = (root || document).querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < times.length; i++) {
      var t = times[i], at = new Date(t.getAttribute("datetime"));
      if (isNaN(at.getTime()) || t.getAttribute("datetime").length <= 10) continue;
      t.title = t.textContent;
      t.textContent = format.format(at);
      t.setAttribute("data-local", "");
    }
  }
  document.addEventListener("DOMContentLoaded", function () { localize(document); });
  document.addEventListener("htmx:afterSwap", function (e) { localize(e.target); });
})();

// The rule editor shows the controls of the trigger chosen; without scripts all are shown, and
// the console reads only the chosen trigger's.
(function () {
  "use strict";
  function showTrigger() {
    var choice = document.getElementById("trigger_type");
    if (!choice) return;
    var parts = document.querySelectorAll(".trigger-part[data-trigger]");
    for (var i = 0; i < parts.length; i++) {
      var types = parts[i].getAttribute("data-trigger").split(" ");
      parts[i].hidden = types.indexOf(choice.value) < 0;
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    showTrigger();
    var choice = document.getElementById("trigger_type");
    if (choice) choice.addEventListener("change", showTrigger);
  });
})();
