/* mss webmail — the signature follows « De »: each mailbox's signature (Mon compte, Rédaction)
   is on its <option data-signature>; when the sender changes, the signature in the message is
   replaced by the new mailbox's — only if it is still exactly the one inserted (a signature
   the person edited is theirs, left as it is). Without a signature yet, the new one goes above
   the quoted original, else at the end. */

const form = document.querySelector("form.compose");
const select = document.getElementById("from_box");
const SEP = "-- ";
const QUOTE_HEAD = /\n\n(Le .* a écrit :\n|-------- Message transféré --------\n)/;

const block = (text) => (text ? SEP + "\n" + text : "");

/** The text with the signature ``before`` replaced by ``after`` (null: edited, left alone). */
export function switchSignature(text, before, after) {
  if (before) {
    const old = "\n" + block(before);
    const at = text.indexOf(old);
    if (at < 0) { return null; }
    const end = at + old.length;
    if (end < text.length && text[end] !== "\n") { return null; }  // typed onto its last line
    if (!after) {
      return text.slice(0, at).replace(/\n+$/, "") + text.slice(end);
    }
    return text.slice(0, at) + "\n" + block(after) + text.slice(end);
  }
  if (!after) { return text; }
  const quote = text.search(QUOTE_HEAD);
  if (quote >= 0) { return text.slice(0, quote) + "\n\n" + block(after) + text.slice(quote); }
  return text.replace(/\n+$/, "") + "\n\n" + block(after) + "\n";
}

if (form && select) {
  const body = form.querySelector("textarea#body");
  let current = select.selectedOptions[0] ? select.selectedOptions[0].dataset.signature || "" : "";

  // The signature block's text as typed: its text nodes, a line break per <br>.
  const sigText = (el) => Array.from(el.childNodes)
    .map((n) => (n.nodeName === "BR" ? "\n" : n.textContent)).join("");

  const richSwitch = (before, after) => {
    const { element, sync } = form.editor;
    let marked = element.querySelector("[data-sig]");
    if (marked ? sigText(marked) !== block(before) : Boolean(before)) { return; }  // edited
    if (!marked) {
      if (!after) { return; }
      marked = document.createElement("div");
      marked.dataset.sig = "";
      const quote = element.querySelector("blockquote");
      const head = quote && quote.previousElementSibling;
      if (head) { head.before(marked); } else { element.append(marked); }
    }
    if (!after) { marked.remove(); sync(); return; }
    marked.replaceChildren();
    block(after).split("\n").forEach((line, i) => {
      if (i) { marked.append(document.createElement("br")); }
      marked.append(line);
    });
    sync();
  };

  select.addEventListener("change", () => {
    const next = select.selectedOptions[0] ? select.selectedOptions[0].dataset.signature || "" : "";
    if (form.editor && form.editor.isRich()) {
      richSwitch(current, next);
    } else {
      const changed = switchSignature(body.value, current, next);
      if (changed !== null) {
        body.value = changed;
        body.dispatchEvent(new Event("input", { bubbles: true }));
      }
    }
    current = next;
  });
}
