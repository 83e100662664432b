/* mss webmail — choosing messages in a list: the header box ticks the page, Shift+click ticks a
   range, and once the whole page is ticked the banner offers every message of the view
   ("Sélectionner les 1 234 messages de « Boîte de réception »"): the form then says tout=1 and
   the server finds them (webmail/mail/bulk.py). A form sent once is not sent again by a
   second click (submit-once.js, on every page). Without this script the same choices are
   links and plain checkboxes.
   Listeners sit on the document: a list replaced in place (#liste, refreshed with fragment())
   keeps working; whoever replaces it dispatches "mss:list-updated" on the document. */

const ROW_BOX = 'input[name="uid"][form="bulk"]';
const boxes = () => Array.from(document.querySelectorAll(ROW_BOX));
const everything = () => document.getElementById("tout");
let last = null;

/** Keep the rows' look, the header box and the banner in step with the ticks. */
function refresh() {
  const all = boxes();
  const ticked = all.filter((b) => b.checked);
  all.forEach((b) => { const row = b.closest("tr"); if (row) { row.classList.toggle("selected", b.checked); } });
  const whole = all.length > 0 && ticked.length === all.length;
  document.querySelectorAll("input.select-all").forEach((header) => {
    header.checked = whole;
    header.indeterminate = ticked.length > 0 && !whole;
  });
  const banner = document.getElementById("select-banner");
  if (!banner) { return; }
  banner.classList.add("enhanced");
  const tout = everything();
  if (!whole && tout) { tout.checked = false; }
  const chosen = Boolean(tout && tout.checked);
  banner.classList.toggle("is-all", chosen);
  banner.classList.toggle("is-page", whole && !chosen);
}

function setAll(checked) { boxes().forEach((b) => { b.checked = checked; }); }

document.addEventListener("click", (event) => {
  const target = event.target;
  if (!(target instanceof Element)) { return; }
  const box = target.closest(ROW_BOX);
  if (box) {
    const all = boxes();
    if (event.shiftKey && last && last !== box && all.includes(last)) {
      const [from, to] = [all.indexOf(last), all.indexOf(box)].sort((a, b) => a - b);
      all.slice(from, to + 1).forEach((b) => { b.checked = box.checked; });
    }
    last = box;
    refresh();
    return;
  }
  const link = target.closest("#select-everything, #select-none");
  if (link && everything()) {
    event.preventDefault();
    const all = link.id === "select-everything";
    setAll(all);
    everything().checked = all;
    refresh();
    const next = all ? everything() : document.querySelector("input.select-all");
    if (next) { next.focus(); }
  }
});

document.addEventListener("change", (event) => {
  const target = event.target;
  if (!(target instanceof Element)) { return; }
  if (target.matches("input.select-all")) { setAll(target.checked); }
  else if (target.id === "tout" && target.checked) { setAll(true); }
  else if (!target.matches(ROW_BOX)) { return; }
  refresh();
});

document.addEventListener("mss:list-updated", () => { last = null; refresh(); });
// A header box ticked before this script ran (a slow phone loads it late): it meant the page.
if (document.querySelector("input.select-all:checked") && !document.querySelector(ROW_BOX + ":checked")) {
  setAll(true);
}
refresh();
