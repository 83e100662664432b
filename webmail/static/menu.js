/* mss webmail — the folding parts (details.fold): the top bar's "Menu" and the mail views'
   "Dossiers". External file only (CSP: no inline script). Everything works without it: on a
   phone they are plain details/summary, from 761 px wide mss.css shows their content.
   Here: open them on wide screens where ::details-content is not supported, fold them back
   when the window narrows, and close an open one with Escape or a click elsewhere. */
(function () {
  "use strict";
  var wide = window.matchMedia("(min-width: 761px)");
  var folds = Array.prototype.slice.call(document.querySelectorAll("details.fold"));
  var sync = function () {
    folds.forEach(function (d) { d.open = wide.matches; d.classList.toggle("unfolded", wide.matches); });
  };
  sync();
  if (wide.addEventListener) { wide.addEventListener("change", sync); }

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || wide.matches) { return; }
    folds.forEach(function (d) {
      if (d.open && d.contains(document.activeElement)) {
        d.open = false;
        d.querySelector("summary").focus();
      }
    });
  });
  document.addEventListener("click", function (event) {
    if (wide.matches) { return; }
    folds.forEach(function (d) { if (d.open && !d.contains(event.target)) { d.open = false; } });
  });
})();
