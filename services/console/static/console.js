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

// The rule editor shows the controls of the trigger chosen, and those of a message or of a tag
// action as the action's kind says; without scripts all are shown, and the console reads only
// the chosen ones'.
(function () {
  "use strict";
  function show(choiceId, selector, attribute, valueOf) {
    var choice = document.getElementById(choiceId);
    if (!choice) return;
    var value = valueOf(choice.value);
    var parts = document.querySelectorAll(selector);
    for (var i = 0; i < parts.length; i++) {
      parts[i].hidden = parts[i].getAttribute(attribute).split(" ").indexOf(value) < 0;
    }
  }
  function showTrigger() {
    show("trigger_type", ".trigger-part[data-trigger]", "data-trigger", function (v) { return v; });
  }
  function showAction() {
    show("action_kind", ".action-part[data-action]", "data-action", function (v) {
      return v === "tag" ? "tag" : "message";
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    showTrigger();
    showAction();
    var trigger = document.getElementById("trigger_type");
    if (trigger) trigger.addEventListener("change", showTrigger);
    var kind = document.getElementById("action_kind");
    if (kind) kind.addEventListener("change", showAction);
  });
})();
