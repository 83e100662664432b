// Compose page: the protection of each recipient's copy, updated while the recipients and the
// Signer / Chiffrer boxes change (webmail/mail/protection.py answers; no inline script, CSP).
(function () {
  "use strict";
  const box = document.getElementById("protection");
  if (!box) { return; }
  const list = box.querySelector("ul");
  const fields = ["to", "cc"].map((id) => document.getElementById(id)).filter(Boolean);
  const sign = document.getElementById("sign");
  const encrypt = document.getElementById("encrypt");
  let timer = null;
  let asked = 0;

  function addresses() {
    return fields.map((f) => f.value).join(",").split(/[,;\n]/)
      .map((a) => a.trim()).filter((a) => a.includes("@"));
  }

  function render(items) {
    list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "Ajoutez des destinataires pour voir la protection de chacun.";
      list.append(li);
      return;
    }
    for (const item of items) {
      const li = document.createElement("li");
      li.className = "protection-" + item.code;
      const who = document.createElement("span");
      who.className = "addr";
      who.textContent = item.address;
      li.append(who, " : " + item.text);
      list.append(li);
    }
  }

  // The list must never show the protection of what is no longer asked: while an answer is
  // awaited it is marked busy; a failed answer (network, server) is asked again, and after
  // RETRIES failures the list says it could not be checked (the server checks again on send).
  const RETRIES = 3;
  let retry = null;

  function unchecked() {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "Protection non vérifiée pour l’instant (pas de réponse du serveur) : " +
      "elle sera vérifiée à l’envoi.";
    list.replaceChildren(li);
  }

  async function update(attempt = 0) {
    clearTimeout(retry);
    const query = new URLSearchParams();
    for (const a of addresses()) { query.append("a", a); }
    if (sign && sign.checked) { query.set("signer", "1"); }
    if (encrypt && encrypt.checked) { query.set("chiffrer", "1"); }
    const mine = ++asked;
    box.setAttribute("aria-busy", "true");
    let items = null;
    try {
      const answer = await fetch(box.dataset.url + "?" + query, { credentials: "same-origin" });
      if (answer.ok) { items = await answer.json(); }
    } catch (e) { /* offline, or not JSON (a log-in page): as a failure */ }
    if (mine !== asked) { return; }  // a newer question is on its way
    if (Array.isArray(items)) {
      box.removeAttribute("aria-busy");
      render(items);
    } else if (attempt < RETRIES) {
      retry = setTimeout(() => update(attempt + 1), 1000 * (attempt + 1));
    } else {
      box.removeAttribute("aria-busy");
      unchecked();
    }
  }

  function later() {
    clearTimeout(timer);
    clearTimeout(retry);
    box.setAttribute("aria-busy", "true");  // what is shown is for the old recipients
    timer = setTimeout(update, 350);
  }

  for (const f of fields) { f.addEventListener("input", later); f.addEventListener("change", later); }
  for (const c of [sign, encrypt]) { if (c) { c.addEventListener("change", () => update()); } }
  // Recipients already there when this script runs (typed while the page was still loading,
  // a form the browser restored): their protection now, not at the next keystroke.
  if (addresses().length) { update(); }
})();
