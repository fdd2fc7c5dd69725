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
// A file input with data-fill="ID" reads the chosen text file into that textarea (a bulk CSV
// is sent as a form field: the pages take no multipart uploads).
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var input = event.target;
    var target = input && input.dataset ? document.getElementById(input.dataset.fill || "") : null;
    if (!target || !input.files || !input.files[0]) { return; }
    var reader = new FileReader();
    reader.onload = function () { target.value = String(reader.result || ""); };
    reader.readAsText(input.files[0]);
  });
})();
// htmx swaps no 4xx answer: a refusal (409) would show nothing. When the answer holds the element
// the request was to replace (a page re-rendered with the reason), it is swapped in like a 200;
// otherwise its message is shown in a notice at the top of the page.
(function () {
  "use strict";
  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (!detail || !detail.xhr || detail.xhr.status !== 409) { return; }
    var answer = new DOMParser().parseFromString(detail.xhr.responseText || "", "text/html");
    var target = detail.target;
    if (target && target.id && answer.getElementById(target.id)) {
      detail.shouldSwap = true;
      detail.isError = false;
      return;
    }
    var found = answer.querySelector("[role='alert']");
    var notice = document.getElementById("refusal");
    if (!notice) {
      notice = document.createElement("p");
      notice.id = "refusal";
      notice.className = "message";
      notice.setAttribute("role", "alert");
      var main = document.querySelector("main") || document.body;
      main.insertBefore(notice, main.firstChild);
    }
    notice.textContent = found ? found.textContent : "Refused.";
  });
})();
