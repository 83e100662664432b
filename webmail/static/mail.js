/* mss webmail — behaviour of the mail views. External file only (CSP: no inline script).
   Everything here is an enhancement: every page works without it. */
(function () {
  "use strict";

  // "Tout sélectionner" in message lists.
  document.querySelectorAll("input.select-all").forEach(function (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="uid"][form="bulk"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });

  // Buttons asking for a confirmation (data-confirm): the server never depends on it.
  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  // The HTML body frame takes the height of its content (same origin, no script inside).
  document.querySelectorAll("iframe.msg-frame").forEach(function (frame) {
    function fit() {
      try {
        var doc = frame.contentDocument;
        if (doc && doc.documentElement) {
          frame.style.height = (doc.documentElement.scrollHeight + 4) + "px";
        }
      } catch (e) { /* keep the default height */ }
    }
    frame.addEventListener("load", fit);
    fit();
  });

  // Compose: attachment sizes against the limit, and the "pièce jointe" reminder.
  var form = document.querySelector("form.compose");
  if (form) {
    var limit = parseInt(form.getAttribute("data-limit"), 10) || 0;
    var files = form.querySelector('input[type="file"]');
    var sizeNote = document.getElementById("att-size");
    var body = form.querySelector("textarea");
    var reminder = document.getElementById("reminder");
    var mention = /pi[eè]ces?[\s-]+jointes?|ci[\s-]joint|\ben\s+pj\b|\bpj\s*:/i;
    var total = function () {
      var sum = 0;
      if (files && files.files) { for (var i = 0; i < files.files.length; i++) { sum += files.files[i].size; } }
      return sum;
    };
    var attachedCount = function () {
      return (files && files.files ? files.files.length : 0) +
        form.querySelectorAll('input[name="keep"]:checked').length;
    };
    var checkReminder = function () {
      if (!reminder || !body) { return; }
      var own = body.value.split("\n").filter(function (l) { return !/^\s*>/.test(l); }).join("\n");
      reminder.classList.toggle("hidden", !(mention.test(own) && attachedCount() === 0));
    };
    if (files && sizeNote) {
      files.addEventListener("change", function () {
        var size = total();
        // The same units as the server's "taille" filter: 602 octets, 5,6 ko, 2,1 Mo.
        var shown = size < 1024 ? size + " octets"
          : size < 1048576 ? (size / 1024).toFixed(1).replace(".", ",") + " ko"
          : (size / 1048576).toFixed(1).replace(".", ",") + " Mo";
        sizeNote.textContent = size > limit
          ? "Trop volumineux : " + shown + " sélectionnés, au-delà de la limite."
          : (size ? shown + " sélectionnés." : "");
        sizeNote.classList.toggle("error", size > limit);
        checkReminder();
      });
    }
    if (body) { body.addEventListener("input", checkReminder); }
    // Files past the limit never leave the browser: the form stays as typed, with the reason
    // (without this script, the server answers the same way: webmail.mail.compose).
    if (files && sizeNote) {
      form.addEventListener("submit", function (event) {
        var size = total();
        if (size <= limit) { return; }
        event.preventDefault();
        sizeNote.textContent = "Les fichiers choisis (" + (size / 1048576).toFixed(1).replace(".", ",") +
          " Mo) dépassent la limite de " + (limit / 1048576).toFixed(0) + " Mo : retirez-en, ou " +
          "envoyez-les en plusieurs messages. Rien n’a été envoyé ; votre message est conservé.";
        sizeNote.classList.add("error");
        sizeNote.setAttribute("role", "alert");
        if (sizeNote.parentNode) { sizeNote.parentNode.classList.add("has-error"); }
        files.focus();
      });
    }
    form.querySelectorAll('input[name="keep"]').forEach(function (k) { k.addEventListener("change", checkReminder); });
  }

  // Recipient autocompletion from the directory (published mailboxes only, server-side).
  document.querySelectorAll("input.recipients[data-suggest]").forEach(function (input) {
    var url = input.getAttribute("data-suggest");
    var wrap = document.createElement("div");
    wrap.className = "suggest";
    input.parentNode.insertBefore(wrap, input);
    wrap.appendChild(input);
    var list = document.createElement("ul");
    list.className = "suggestions hidden";
    list.id = input.id + "-suggestions";
    list.setAttribute("role", "listbox");
    wrap.appendChild(list);
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    var active = -1, timer = null, items = [];

    var current = function () {
      var parts = input.value.split(/[,;]/);
      return parts[parts.length - 1].trim();
    };
    var close = function () {
      list.classList.add("hidden"); input.setAttribute("aria-expanded", "false"); active = -1;
      input.removeAttribute("aria-activedescendant");
    };
    var choose = function (i) {
      var parts = input.value.split(/[,;]/);
      parts[parts.length - 1] = " " + items[i].address;
      input.value = parts.join(",").replace(/^\s+/, "") + ", ";
      close();
      input.focus();
    };
    var highlight = function (i) {
      var nodes = list.querySelectorAll("li");
      nodes.forEach(function (n, j) { n.setAttribute("aria-selected", j === i ? "true" : "false"); });
      active = i;
      if (nodes[i]) { input.setAttribute("aria-activedescendant", nodes[i].id); }
    };
    var render = function () {
      list.textContent = "";
      items.forEach(function (item, i) {
        var li = document.createElement("li");
        li.id = list.id + "-" + i;
        li.setAttribute("role", "option");
        li.textContent = item.name + " <" + item.address + ">";
        var detail = document.createElement("span");
        detail.className = "s-detail";
        detail.textContent = item.detail;
        li.appendChild(detail);
        li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(i); });
        list.appendChild(li);
      });
      var open = items.length > 0;
      list.classList.toggle("hidden", !open);
      input.setAttribute("aria-expanded", open ? "true" : "false");
    };
    input.addEventListener("input", function () {
      clearTimeout(timer);
      var q = current();
      if (q.length < 2) { items = []; render(); return; }
      timer = setTimeout(function () {
        fetch(url + "?q=" + encodeURIComponent(q), { credentials: "same-origin", headers: { "Accept": "application/json" } })
          .then(function (r) { return r.ok ? r.json() : []; })
          .then(function (data) { items = data; render(); })
          .catch(function () { items = []; render(); });
      }, 150);
    });
    input.addEventListener("keydown", function (e) {
      if (list.classList.contains("hidden")) { return; }
      if (e.key === "ArrowDown") { e.preventDefault(); highlight(Math.min(active + 1, items.length - 1)); }
      else if (e.key === "ArrowUp") { e.preventDefault(); highlight(Math.max(active - 1, 0)); }
      else if (e.key === "Enter" && active >= 0) { e.preventDefault(); choose(active); }
      else if (e.key === "Escape") { close(); }
    });
    input.addEventListener("blur", function () { setTimeout(close, 100); });
  });
})();
