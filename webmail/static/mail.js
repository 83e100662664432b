/* mss webmail — behaviour of the mail views. External file only (CSP: no inline script).
   Everything here is an enhancement: every page works without it. */
(function () {
  "use strict";

  // Choosing messages in lists: js/list-select.js.

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

  // Compose: attachments and the « pièce jointe » reminder are in js/attachments.js.

  // Recipient autocompletion from the directory (published mailboxes only, server-side).
  document.querySelectorAll("input.recipients[data-suggest]").forEach(function (input) {
    var url = input.getAttribute("data-suggest");
    var wrap = document.createElement("div");
    wrap.className = "suggest";
    // Moving a field takes its focus away: someone already typing in it (a slow page) keeps it.
    var typing = document.activeElement === input;
    var caret = typing ? input.selectionStart : null;
    input.parentNode.insertBefore(wrap, input);
    wrap.appendChild(input);
    if (typing) { input.focus(); input.setSelectionRange(caret, caret); }
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
        li.textContent = item.label || (item.name + " <" + item.address + ">");
        var detail = document.createElement("span");
        detail.className = "s-detail";
        detail.textContent = item.detail;
        li.appendChild(detail);
        li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(i); });
        list.appendChild(li);
      });
      var open = items.length > 0 && document.activeElement === input;  // an answer after leaving the field stays shut
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
