/* mss webmail — keyboard shortcuts with Gmail's letters (the help, "?", lists them; README too):
   j/k next/previous message, o or Entrée open, u back to the list, x tick, s suivi, r reply,
   a reply all, f forward, c write, # or Suppr delete, / search, ? help.
   Never while typing (a text field, a list box, anything editable) nor with Ctrl, Alt or Cmd
   (AltGr, which French keyboards need for #, is not Ctrl+Alt here). Loaded only when the person
   keeps them on (webmail/mail/preferences.py). In the read view a letter clicks the element
   marked data-shortcut="<letter>"; in a list it acts on the row under the cursor. */

const TYPING = /^(TEXTAREA|SELECT)$/;
const NOT_TEXT = new Set(["checkbox", "radio", "button", "submit", "reset", "image", "file", "range", "color"]);
const CURSOR_KEY = "mss-list-cursor";

function typing(element) {
  if (!(element instanceof Element)) { return false; }
  if (element.isContentEditable || TYPING.test(element.tagName)) { return true; }
  return element.tagName === "INPUT" && !NOT_TEXT.has((element.type || "text").toLowerCase());
}

function modified(event) {
  const altGr = event.getModifierState && event.getModifierState("AltGraph");
  return event.metaKey || (!altGr && (event.ctrlKey || event.altKey));
}

// ---------------------------------------------------------------- the list's cursor
const rows = () => Array.from(document.querySelectorAll(".msg-table tbody tr[data-uid]"));
const current = () => document.querySelector(".msg-table tbody tr.cursor");

let cursorUid = null;  // kept when the list is refreshed in place (js/live.js)

function place(row, focus = true) {
  rows().forEach((r) => r.classList.remove("cursor"));
  cursorUid = row ? row.dataset.uid : null;
  if (!row) { return; }
  row.classList.add("cursor");
  const link = row.querySelector(".col-subject a");
  if (focus && link) { link.focus(); row.scrollIntoView({ block: "nearest" }); }
}

document.addEventListener("mss:list-updated", () => {
  const row = cursorUid && rows().find((r) => r.dataset.uid === cursorUid);
  if (row) { place(row, false); }
});

function step(delta) {
  const all = rows();
  if (!all.length) { return; }
  const index = all.indexOf(current());
  const next = index < 0 ? 0 : Math.min(Math.max(index + delta, 0), all.length - 1);
  place(all[next]);
}

function remember(row) {
  const table = row.closest(".msg-table");
  sessionStorage.setItem(CURSOR_KEY, `${table ? table.dataset.folder : ""}:${row.dataset.uid}`);
}

function open(row) {
  if (!row) { step(1); return; }
  const link = row.querySelector(".col-subject a");
  if (link) { link.click(); }  // remembered by the click listener below
}

document.addEventListener("click", (event) => {
  const row = event.target instanceof Element && event.target.closest(".msg-table tbody tr[data-uid] a");
  if (row) { remember(row.closest("tr")); }
});

// The cursor follows the focus (Tab, a click): j/k go on from the row one is on.
document.addEventListener("focusin", (event) => {
  const row = event.target instanceof Element && event.target.closest(".msg-table tbody tr[data-uid]");
  if (row && !row.classList.contains("cursor")) { place(row, false); }
});

function composeFor(row, kind) {
  const table = row.closest(".msg-table");
  const params = new URLSearchParams({ dossier: table.dataset.folder });
  if (kind === "transfert") { params.set("transfert", row.dataset.uid); }
  else { params.set("reponse", row.dataset.uid); if (kind === "tous") { params.set("tous", "1"); } }
  window.location.assign(table.dataset.compose + "?" + params.toString());
}

function deleteRows(row) {
  const button = document.querySelector("#bulk [data-shortcut-delete]");
  if (!button) { return; }
  const ticked = document.querySelectorAll('input[name="uid"][form="bulk"]:checked');
  if (!ticked.length) {
    const box = row && row.querySelector('input[name="uid"]');
    if (!box) { return; }
    box.checked = true;
  }
  button.click();  // the toolbar's own button: its confirmation, its form, its guard
}

function inList(event) {
  const row = current();
  const actions = {
    j: () => step(1), k: () => step(-1),
    o: () => open(row),
    x: () => { const box = row && row.querySelector('input[name="uid"]'); if (box) { box.click(); } },
    s: () => { const star = row && row.querySelector("button.star"); if (star) { star.click(); } },
    r: () => row && composeFor(row, "reponse"),
    a: () => row && composeFor(row, "tous"),
    f: () => row && composeFor(row, "transfert"),
    "#": () => deleteRows(row), Delete: () => deleteRows(row),
  };
  if (event.key === "Enter") {
    // Enter on a link or a button does what it does; on the page or a row it opens.
    if (event.target instanceof Element && event.target.closest("a, button, input, label")) { return false; }
    actions.Enter = () => open(row);
  }
  const act = actions[event.key];
  if (!act) { return false; }
  act();
  return true;
}

function inReading(event) {
  const key = event.key === "Delete" ? "#" : event.key;
  const element = document.querySelector(`[data-shortcut="${CSS.escape(key)}"]`);
  if (!element) { return false; }
  element.click();
  return true;
}

// ---------------------------------------------------------------- the help
const help = document.getElementById("shortcuts-help");
let opener = null;

function focusables() {
  return Array.from(help.querySelectorAll("button, a[href], input, select, textarea, [tabindex]"))
    .filter((el) => !el.disabled && el.getAttribute("tabindex") !== "-1");
}

function showHelp() {
  if (!help || help.open) { return; }
  opener = document.activeElement;
  help.showModal();
  const close = help.querySelector("[data-close]");
  if (close) { close.focus(); }
}

if (help) {
  help.addEventListener("close", () => {
    if (opener && opener.isConnected && typeof opener.focus === "function") { opener.focus(); }
    opener = null;
  });
  help.addEventListener("click", (event) => {
    // A click on the backdrop (the dialog itself, outside its content) or on "Fermer".
    if (event.target === help || (event.target instanceof Element && event.target.closest("[data-close]"))) {
      help.close();
    }
  });
  help.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") { return; }
    const items = focusables();
    if (!items.length) { return; }
    const first = items[0], last = items[items.length - 1];
    if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
    else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
  });
  const button = document.getElementById("shortcuts-open");
  if (button) {
    button.hidden = false;
    button.addEventListener("click", showHelp);
  }
}

// ---------------------------------------------------------------- the keys
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.repeat && event.key !== "j" && event.key !== "k") { return; }
  if (modified(event) || typing(event.target) || typing(document.activeElement)) { return; }
  if (help && help.open) { return; }  // the dialog has its own keys (Tab, Escape)
  // Writing a message: no letter may take the person away from it (a click outside the
  // fields leaves the focus on the page).
  if (document.querySelector("form.compose")) { return; }
  let done = true;
  if (event.key === "?") { showHelp(); }
  else if (event.key === "/") {
    const search = document.querySelector("[data-shortcut-search]");
    if (search) { search.focus(); search.select(); } else { done = false; }
  } else if (event.key === "c") {
    const write = document.getElementById("write");
    if (write) { write.click(); } else { done = false; }
  } else if (document.querySelector(".msg-table tbody tr[data-uid]") && !document.querySelector("[data-shortcut]")) {
    done = inList(event);
  } else {
    done = inReading(event);
  }
  if (done) { event.preventDefault(); }
});

// Back from a message: the cursor is on the row that was opened (not focused: the page keeps
// its usual first focus).
const remembered = sessionStorage.getItem(CURSOR_KEY);
if (remembered) {
  const row = rows().find((r) => `${r.closest(".msg-table").dataset.folder}:${r.dataset.uid}` === remembered);
  if (row) { place(row, false); }
}
