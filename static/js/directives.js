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
  // "?" beside a directive: its why-row below (Apache's meaning, default, what raising it costs)
  document.body.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest(".why-toggle");
    if (!b) return;
    const row = document.getElementById(b.getAttribute("aria-controls"));
    if (!row) return;
    row.hidden = !row.hidden;
    b.setAttribute("aria-expanded", row.hidden ? "false" : "true");
  });
  document.body.addEventListener("htmx:afterSettle", (e) => reveal(e.detail.elt));
  document.body.addEventListener("htmx:oobAfterSwap", (e) => reveal(e.detail.target || e.target));
})();
