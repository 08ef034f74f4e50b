// The Directives tab after Apply: the first field in error is scrolled into the side panel's
// view, so a refusal is never left below the fold. The outcome itself sits in the
// panel's sticky bottom bar, beside the Apply button (templates/fragments/_directives.html).
(function () {
  "use strict";
  function reveal(root) {
    if (!root || root.id !== "directives") return;
    const err = root.querySelector(".field-error");
    if (!err) return; // the outcome is in the sticky bar: in view already
    const row = err.closest("tr");
    row.scrollIntoView({block: "center", inline: "nearest"});
    const input = row.querySelector("input, select");
    if (input) input.focus({preventScroll: true});
  }
  document.body.addEventListener("htmx:afterSettle", (e) => reveal(e.detail.elt));
  document.body.addEventListener("htmx:oobAfterSwap", (e) => reveal(e.detail.target || e.target));
})();
