// The staff pages' only script of our own (no inline script: the CSP forbids it).
// The slice viewer: the mouse wheel and the arrow keys press its "previous" / "next" buttons,
// which load the neighbouring slice with htmx.
(function () {
  "use strict";
  function step(viewer, delta) {
    var button = viewer.querySelector(delta > 0 ? "[data-step='next']" : "[data-step='prev']");
    if (button && !button.disabled) { button.click(); }
  }
  document.addEventListener("wheel", function (event) {
    var viewer = event.target.closest ? event.target.closest(".viewer") : null;
    if (!viewer) { return; }
    event.preventDefault();
    step(viewer, event.deltaY > 0 ? 1 : -1);
  }, { passive: false });
  document.addEventListener("keydown", function (event) {
    var viewer = document.querySelector(".viewer");
    if (!viewer || (event.target.tagName || "").match(/INPUT|TEXTAREA|SELECT/)) { return; }
    if (event.key === "ArrowDown" || event.key === "ArrowRight") { event.preventDefault(); step(viewer, 1); }
    if (event.key === "ArrowUp" || event.key === "ArrowLeft") { event.preventDefault(); step(viewer, -1); }
  });
})();
