/* mss webmail — « Mise en forme »: a light editor (bold, italic, lists, links) over the compose
   page's text. Plain text stays the default; the button turns the text into an editable block
   (contenteditable) and back. While it is on, the form posts format=html and the HTML in
   body_html, which the server cleans (webmail.mail.sanitise.clean_composed) and sends with a
   plain-text part derived from it; the textarea follows with the same text, for the reminder and
   the draft. What is pasted is cleaned here already (only the tags the server keeps), so the page
   never shows what will not be sent. Without this script, there is only the text. */

const form = document.querySelector("form.compose");
const KEEP = new Set(["B", "STRONG", "I", "EM", "U", "UL", "OL", "LI", "A", "P", "DIV", "BR", "BLOCKQUOTE"]);
const DROP = new Set(["SCRIPT", "STYLE", "TEMPLATE", "SVG", "MATH", "IFRAME", "OBJECT", "EMBED", "NOSCRIPT",
  "TITLE", "HEAD", "TEXTAREA", "SELECT", "BUTTON", "IMG", "VIDEO", "AUDIO", "CANVAS", "FORM", "INPUT", "LINK", "META"]);
const BLOCKS = new Set(["P", "DIV", "UL", "OL", "BLOCKQUOTE", "LI"]);

/** An address a link may have: http(s) or mailto, nothing else (javascript:, data:…). */
export function safeHref(value) {
  const text = (value || "").trim();
  if (/^mailto:[^\s<>"]+@[^\s<>"]+$/i.test(text)) { return text; }
  try {
    const url = new URL(text);
    return (url.protocol === "https:" || url.protocol === "http:") ? url.href : null;
  } catch (e) {
    return null;
  }
}

/** Only what the server keeps: allowed tags, a link's http(s)/mailto address, no attribute else. */
export function clean(html) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  const out = document.createDocumentFragment();
  const copy = (node, into) => {
    for (const child of Array.from(node.childNodes)) {
      if (child.nodeType === Node.TEXT_NODE) { into.append(child.textContent); continue; }
      if (child.nodeType !== Node.ELEMENT_NODE || DROP.has(child.tagName)) { continue; }
      const href = child.tagName === "A" ? safeHref(child.getAttribute("href")) : null;
      if (!KEEP.has(child.tagName) || (child.tagName === "A" && !href)) { copy(child, into); continue; }
      const kept = document.createElement(child.tagName.toLowerCase());
      if (href) { kept.setAttribute("href", href); }
      copy(child, kept);
      into.append(kept);
    }
  };
  copy(doc.body, out);
  const holder = document.createElement("div");
  holder.append(out);
  return holder.innerHTML;
}

const escapeHtml = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** The text as editable blocks: a line per block, "> " lines as a quotation, the signature
    ("-- " to the next blank line) marked so that changing « De » can find it. */
export function textToHtml(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const html = [];
  for (let i = 0; i < lines.length; i++) {
    if (/^>/.test(lines[i])) {
      const quoted = [];
      while (i < lines.length && /^>/.test(lines[i])) { quoted.push(lines[i].replace(/^> ?/, "")); i++; }
      i--;
      html.push("<blockquote>" + textToHtml(quoted.join("\n")) + "</blockquote>");
    } else if (lines[i] === "-- ") {
      const sig = ["-- "];
      while (i + 1 < lines.length && lines[i + 1] !== "") { i++; sig.push(lines[i]); }
      html.push('<div data-sig="">' + sig.map(escapeHtml).join("<br>") + "</div>");
    } else {
      html.push(lines[i] ? "<div>" + escapeHtml(lines[i]) + "</div>" : "<div><br></div>");
    }
  }
  return html.join("");
}

/** The plain text of the editor (the server derives the sent text the same way). */
export function htmlToText(root) {
  const lines = [""];
  let quote = 0;
  const lists = [];
  const brk = () => lines.push("");
  const block = () => { if (lines[lines.length - 1].replace(/^(> )+/, "").trim()) { brk(); } };
  const put = (text) => {
    if (!lines[lines.length - 1] && quote) { lines[lines.length - 1] = "> ".repeat(quote); }
    lines[lines.length - 1] += text;
  };
  const walk = (node) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) { put(child.textContent.replace(/\s+/g, " ")); continue; }
      if (child.nodeType !== Node.ELEMENT_NODE) { continue; }
      const tag = child.tagName;
      if (tag === "BR") { brk(); continue; }
      if (BLOCKS.has(tag)) { block(); }
      if (tag === "BLOCKQUOTE") { quote++; }
      if (tag === "UL" || tag === "OL") { lists.push({ numbered: tag === "OL", n: 1 }); }
      if (tag === "LI") {
        const list = lists[lists.length - 1] || { numbered: false, n: 1 };
        put("  ".repeat(Math.max(lists.length - 1, 0)) + (list.numbered ? list.n + ". " : "- "));
        list.n++;
      }
      walk(child);
      if (tag === "A") {
        const href = child.getAttribute("href") || "";
        const shown = href.startsWith("mailto:") ? href.slice(7) : href;
        if (href && shown !== child.textContent.trim()) { put(" <" + shown + ">"); }
      }
      if (BLOCKS.has(tag)) { block(); }
      if (tag === "BLOCKQUOTE") { quote--; }
      if (tag === "UL" || tag === "OL") { lists.pop(); }
    }
  };
  walk(root);
  return lines.map((l) => (l === "-- " ? l : l.replace(/\s+$/, ""))).join("\n")
    .replace(/\n{3,}/g, "\n\n").replace(/^\n+|\n+$/g, "") + "\n";
}

function button(label, title, command) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "btn btn-small tool";
  b.innerHTML = label;  // our own constant markup (a <b>, an <i>)
  b.title = title;
  b.setAttribute("aria-label", title);
  b.dataset.command = command;
  b.addEventListener("mousedown", (event) => event.preventDefault());  // keep the selection
  return b;
}

if (form) {
  const body = form.querySelector("textarea#body");
  const store = document.getElementById("body_html");
  const format = document.getElementById("format");
  const head = form.querySelector(".body-head");

  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.id = "rich-toggle";
  toggle.className = "btn btn-small btn-ghost";
  toggle.textContent = "Mise en forme";
  toggle.setAttribute("aria-pressed", "false");
  toggle.title = "Gras, italique, listes et liens (le texte seul reste envoyé avec)";
  head.querySelector("label").after(toggle);

  const bar = document.createElement("div");
  bar.className = "rich-bar hidden";
  bar.setAttribute("role", "toolbar");
  bar.setAttribute("aria-label", "Mise en forme du message");
  bar.setAttribute("aria-controls", "rich-editor");
  // Visible text inside each accessible name (WCAG 2.5.3): "G" in « Gras », "I" in « Italique ».
  const tools = [button("<b>G</b>", "Gras", "bold"), button("<i>I</i>", "Italique", "italic"),
    button("Liste à puces", "Liste à puces", "insertUnorderedList"),
    button("Liste numérotée", "Liste numérotée", "insertOrderedList"),
    button("Lien", "Ajouter un lien", "link")];
  bar.append(...tools);

  const linkBox = document.createElement("div");
  linkBox.className = "rich-link hidden";
  linkBox.innerHTML = '<label for="rich-link-url">Adresse du lien</label>' +
    '<input type="url" id="rich-link-url" placeholder="https://" autocomplete="off" maxlength="2000">' +
    '<button type="button" class="btn btn-small" id="rich-link-ok">Ajouter le lien</button>' +
    '<button type="button" class="btn btn-small btn-ghost" id="rich-link-cancel">Annuler</button>' +
    '<p class="error hidden" id="rich-link-err" role="alert"></p>';

  const editor = document.createElement("div");
  editor.id = "rich-editor";
  editor.className = "rich-editor hidden";
  editor.contentEditable = "true";
  editor.setAttribute("role", "textbox");
  editor.setAttribute("aria-multiline", "true");
  editor.setAttribute("aria-labelledby", "body-label");
  body.after(bar, linkBox, editor);

  let savedRange = null;

  const sync = () => {
    store.value = editor.innerHTML;
    body.value = htmlToText(editor);
    body.dispatchEvent(new Event("input"));  // not bubbling: the reminder only
  };

  const setRich = (on, html) => {
    toggle.setAttribute("aria-pressed", String(on));
    bar.classList.toggle("hidden", !on);
    editor.classList.toggle("hidden", !on);
    body.classList.toggle("hidden", on);
    format.value = on ? "html" : "text";
    if (on) {
      editor.innerHTML = html === undefined ? textToHtml(body.value) : clean(html);
      sync();
    } else {
      linkBox.classList.add("hidden");
      body.value = htmlToText(editor);
      store.value = "";
    }
    form.dispatchEvent(new CustomEvent("mss:changed", { bubbles: true }));
  };

  toggle.addEventListener("click", () => {
    const on = toggle.getAttribute("aria-pressed") !== "true";
    setRich(on);
    (on ? editor : body).focus();
  });

  const states = () => {
    for (const t of tools.slice(0, 2)) {
      t.setAttribute("aria-pressed", String(document.queryCommandState(t.dataset.command)));
    }
  };
  document.addEventListener("selectionchange", () => { if (!editor.classList.contains("hidden")) { states(); } });

  const linkInput = linkBox.querySelector("input");
  const linkError = linkBox.querySelector("#rich-link-err");
  const closeLink = () => { linkBox.classList.add("hidden"); linkError.classList.add("hidden"); };

  bar.addEventListener("click", (event) => {
    const tool = event.target.closest("button[data-command]");
    if (!tool) { return; }
    if (tool.dataset.command === "link") {
      const selection = window.getSelection();
      savedRange = selection.rangeCount && editor.contains(selection.anchorNode)
        ? selection.getRangeAt(0).cloneRange() : null;
      linkBox.classList.remove("hidden");
      linkInput.value = "";
      linkInput.focus();
      return;
    }
    editor.focus();
    document.execCommand(tool.dataset.command, false, null);
    sync();
    states();
  });

  const addLink = () => {
    const href = safeHref(linkInput.value);
    if (!href) {
      linkError.textContent = "Adresse invalide : elle doit commencer par https://, http:// ou mailto:.";
      linkError.classList.remove("hidden");
      linkInput.focus();
      return;
    }
    editor.focus();
    const selection = window.getSelection();
    if (savedRange) { selection.removeAllRanges(); selection.addRange(savedRange); }
    if (!savedRange || savedRange.collapsed) {
      document.execCommand("insertHTML", false, '<a href="' + escapeHtml(href).replace(/"/g, "&quot;") + '">' +
        escapeHtml(href) + "</a>");
    } else {
      document.execCommand("createLink", false, href);
    }
    closeLink();
    sync();
  };
  linkBox.querySelector("#rich-link-ok").addEventListener("click", addLink);
  linkBox.querySelector("#rich-link-cancel").addEventListener("click", () => { closeLink(); editor.focus(); });
  linkInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); addLink(); }
    if (event.key === "Escape") { closeLink(); editor.focus(); }
  });

  editor.addEventListener("input", sync);
  editor.addEventListener("paste", (event) => {
    const data = event.clipboardData;
    if (!data || Array.from(data.files).some((f) => f.type.startsWith("image/"))) { return; }  // attachments.js
    event.preventDefault();
    const html = data.getData("text/html");
    if (html) { document.execCommand("insertHTML", false, clean(html)); }
    else { document.execCommand("insertText", false, data.getData("text/plain")); }
    sync();
  });
  editor.addEventListener("drop", (event) => {
    if (event.dataTransfer && event.dataTransfer.types.includes("text/html")) {
      event.preventDefault();  // dragged markup would skip the cleaning above
      document.execCommand("insertText", false, event.dataTransfer.getData("text/plain"));
      sync();
    }
  });
  form.addEventListener("submit", () => { if (format.value === "html") { sync(); } });

  // A draft or a form shown again that was written with « Mise en forme » opens in it.
  if (format.dataset.initial === "html" && store.value.trim()) { setRich(true, store.value); }
  else { store.value = ""; }
  form.editor = { isRich: () => format.value === "html", element: editor, sync };
}
