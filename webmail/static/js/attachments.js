/* mss webmail — the compose page's attachments: files chosen, dropped or pasted (an image from
   the clipboard), each with its size and a « Retirer » button, and the total kept under the
   limit before anything leaves (the server checks again: webmail.mail.compose). The files travel
   in the form's own <input type=file> (set through a DataTransfer), so the form posts them as
   without this script. Also the « pièce jointe » reminder. */

const form = document.querySelector("form.compose");

/** "602 octets", "5,6 ko", "2,1 Mo": the units of the server's « taille » filter. */
export function sizeText(size) {
  if (size < 1024) { return size + " octets"; }
  if (size < 1048576) { return (size / 1024).toFixed(1).replace(".", ",") + " ko"; }
  return (size / 1048576).toFixed(1).replace(".", ",") + " Mo";
}

/** The limit as the page states it (compose.py ``_mb``): "18 Mo", "1,4 Mo". */
const limitText = (limit) => (limit / 1048576).toFixed(1).replace(".", ",").replace(/,0$/, "") + " Mo";

if (form) {
  const limit = parseInt(form.dataset.limit, 10) || 0;
  const input = form.querySelector('input[type="file"][name="attachments"]');
  const field = form.querySelector(".attachments-field");
  const list = document.getElementById("att-new");
  const note = document.getElementById("att-size");
  const body = form.querySelector("textarea#body");
  const reminder = document.getElementById("reminder");
  const mention = /pi[eè]ces?[\s-]+jointes?|ci[\s-]joint|\ben\s+pj\b|\bpj\s*:/i;
  let files = [];
  let pasted = 0;

  const keptBoxes = () => Array.from(form.querySelectorAll('input[name="keep"]'));
  const keptSize = () => keptBoxes().filter((k) => k.checked)
    .reduce((sum, k) => sum + (parseInt(k.dataset.size, 10) || 0), 0);
  const total = () => keptSize() + files.reduce((sum, f) => sum + f.size, 0);

  function say(text, isError) {
    note.textContent = text;
    note.classList.toggle("error", Boolean(isError));
    if (isError) { note.setAttribute("role", "alert"); } else { note.removeAttribute("role"); }
    field.classList.toggle("has-error", Boolean(isError));
  }

  function sync() {
    const transfer = new DataTransfer();
    files.forEach((f) => transfer.items.add(f));
    input.files = transfer.files;
  }

  /** One list for what goes with the message: the attachments kept (from the draft or the
      message forwarded: their checkboxes, hidden, still post them) and the files added. */
  function render() {
    list.replaceChildren();
    const entries = keptBoxes().filter((k) => k.checked).map((k) => ({
      name: k.dataset.name || k.value, size: parseInt(k.dataset.size, 10) || 0,
      remove: () => { k.checked = false; } }))
      .concat(files.map((file) => ({ name: file.name, size: file.size,
        remove: () => { files = files.filter((f) => f !== file); } })));
    for (const entry of entries) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      name.className = "att-name";
      name.textContent = entry.name;
      const size = document.createElement("span");
      size.className = "muted small";
      size.textContent = " (" + sizeText(entry.size) + ")";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "btn btn-small btn-ghost att-remove";
      remove.textContent = "Retirer";
      remove.setAttribute("aria-label", "Retirer " + entry.name);
      remove.addEventListener("click", () => {
        entry.remove();
        changed();
        say("« " + entry.name + " » retiré.", false);
        choose.focus();
      });
      li.append(name, size, " ", remove);
      list.append(li);
    }
    const sum = total();
    if (!note.classList.contains("error")) {
      note.textContent = sum ? "Total : " + sizeText(sum) + " sur " + limitText(limit) + " permis." : "";
    }
  }

  function changed() {
    sync();
    render();
    checkReminder();
    form.dispatchEvent(new CustomEvent("mss:changed", { bubbles: true }));
  }

  /** Add what was chosen, dropped or pasted; a file that would pass the limit is left out,
      with the reason. */
  function add(incoming) {
    const refused = [];
    for (const file of incoming) {
      if (total() + file.size > limit) { refused.push(file); } else { files.push(file); }
    }
    if (refused.length) {
      const names = refused.map((f) => "« " + f.name + " » (" + sizeText(f.size) + ")").join(", ");
      say(names + (refused.length > 1 ? " n’ont pas été ajoutés" : " n’a pas été ajouté") +
        " : l’ensemble des pièces jointes dépasserait la limite de " + limitText(limit) +
        ". Réduisez le fichier, ou envoyez-le dans un autre message.", true);
    } else {
      say("", false);
    }
    changed();
  }

  function checkReminder() {
    if (!reminder || !body) { return; }
    const own = body.value.split("\n").filter((l) => !/^\s*>/.test(l)).join("\n");
    const attached = files.length + keptBoxes().filter((k) => k.checked).length;
    reminder.classList.toggle("hidden", !(mention.test(own) && attached === 0));
  }

  // The input's own choice replaces its files: take them as additions to the list.
  input.addEventListener("change", () => {
    const chosen = Array.from(input.files);
    sync();  // back to what the list holds, before adding (or refusing) the new ones
    add(chosen);
  });

  field.querySelector(".drop-hint").classList.remove("hidden");
  // The browser's own file button speaks its language: ours says it in French and opens it.
  const choose = document.createElement("button");
  choose.type = "button";
  choose.className = "btn btn-small att-choose";
  choose.textContent = "Joindre des fichiers";
  choose.addEventListener("click", () => input.click());
  input.classList.add("att-input-hidden");
  input.tabIndex = -1;
  input.after(choose);
  const hideKept = () => { const kept = field.querySelector("ul.kept"); if (kept) { kept.classList.add("hidden"); } };
  hideKept();
  for (const type of ["dragenter", "dragover"]) {
    field.addEventListener(type, (event) => {
      if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) { return; }
      event.preventDefault();
      field.classList.add("dragging");
    });
  }
  field.addEventListener("dragleave", (event) => {
    if (!field.contains(event.relatedTarget)) { field.classList.remove("dragging"); }
  });
  field.addEventListener("drop", (event) => {
    event.preventDefault();
    field.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) { add(Array.from(event.dataTransfer.files)); }
  });

  // An image pasted into the message (a screenshot) becomes an attachment; text pastes as text.
  form.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    const images = items.filter((f) => f.type.startsWith("image/"));
    if (!images.length) { return; }
    event.preventDefault();
    add(images.map((f) => {
      pasted += 1;
      const extension = (f.type.split("/")[1] || "png").replace(/[^a-z0-9]/g, "");
      return new File([f], "image-collee-" + pasted + "." + extension, { type: f.type });
    }));
  });

  form.addEventListener("change", (event) => {
    if (event.target.name === "keep") { say("", false); render(); checkReminder(); }
  });
  if (body) { body.addEventListener("input", checkReminder); }

  // After an autosave the files sent live in the draft: they come back as kept attachments.
  // The draft holds the kept parts posted, then the files posted, in that order; one removed
  // while the save was under way stays removed (unticked), one added meanwhile stays to send.
  form.addEventListener("mss:autosaved", (event) => {
    const { answer, sent, keep } = event.detail;
    const ticked = new Set(keptBoxes().filter((k) => k.checked).map((k) => k.value));
    const wanted = answer.attachments.map((part, i) =>
      (i < keep.length ? ticked.has(keep[i]) : files.includes(sent[i - keep.length])));
    files = files.filter((f) => !sent.includes(f));
    event.detail.stale = wanted.some((w) => !w);
    let kept = field.querySelector("ul.kept");
    if (!kept) {
      kept = document.createElement("ul");
      kept.className = "kept hidden";
      field.querySelector("legend").after(kept);
    }
    kept.replaceChildren();
    answer.attachments.forEach((part, i) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      label.className = "check";
      const box = document.createElement("input");
      Object.assign(box, { type: "checkbox", name: "keep", value: String(part.index), checked: wanted[i] });
      box.dataset.size = String(part.size);
      box.dataset.name = part.filename;
      const text = document.createElement("span");
      const size = document.createElement("span");
      size.className = "muted small";
      size.textContent = "(" + part.size_text + ")";
      text.append(part.filename + " ", size);
      label.append(box, " ", text);
      li.append(label);
      kept.append(li);
    });
    sync();
    render();
  });

  // Never post more than the limit (files are refused when added; this is the last guard).
  form.addEventListener("submit", (event) => {
    if (total() <= limit) { return; }
    event.preventDefault();
    say("Les pièces jointes (" + sizeText(total()) + ") dépassent la limite de " + limitText(limit) +
      " : retirez-en, ou envoyez-les en plusieurs messages. Rien n’a été envoyé ; votre message est conservé.", true);
    choose.focus();
  });

  render();
  checkReminder();
}
