// A table wider than the screen scrolls inside its own box (style.css); a keyboard user must be
// able to reach and scroll it too (WCAG 2.1.1; axe-core rule scrollable-region-focusable).
"use strict";
function focusableWhenScrolling() {
  document.querySelectorAll("main table, main .table-wrap").forEach(function (box) {
    if (box.scrollWidth > box.clientWidth) {
      box.setAttribute("tabindex", "0");
      if (!box.hasAttribute("role")) box.setAttribute("role", "region");
      if (!box.hasAttribute("aria-label")) {
        var caption = box.querySelector("caption");
        var heading = caption || box.previousElementSibling;
        box.setAttribute("aria-label", (heading && heading.textContent.trim()) || "Table");
      }
    } else if (box.getAttribute("tabindex") === "0") {
      box.removeAttribute("tabindex");
    }
  });
}
document.addEventListener("DOMContentLoaded", focusableWhenScrolling);
window.addEventListener("resize", focusableWhenScrolling);
