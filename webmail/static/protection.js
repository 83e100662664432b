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

  async function update() {
    const query = new URLSearchParams();
    for (const a of addresses()) { query.append("a", a); }
    if (sign && sign.checked) { query.set("signer", "1"); }
    if (encrypt && encrypt.checked) { query.set("chiffrer", "1"); }
    const mine = ++asked;
    try {
      const answer = await fetch(box.dataset.url + "?" + query, { credentials: "same-origin" });
      if (answer.ok && mine === asked) { render(await answer.json()); }
    } catch (e) { /* offline: the list stays as it was; the server checks again on send */ }
  }

  function later() {
    clearTimeout(timer);
    timer = setTimeout(update, 350);
  }

  for (const f of fields) { f.addEventListener("input", later); f.addEventListener("change", later); }
  for (const c of [sign, encrypt]) { if (c) { c.addEventListener("change", update); } }
  // Recipients already there when this script runs (typed while the page was still loading,
  // a form the browser restored): their protection now, not at the next keystroke.
  if (addresses().length) { update(); }
})();
