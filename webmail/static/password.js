/* Password strength indicator (registration, password change, reset): red until the trust space's
   rules are met (8 characters, lower case, upper case, digit), then green. No inline script:
   inputs opt in with data-strength. */
(function () {
  "use strict";
  var RULES = [
    ["length", function (v) { return v.length >= 8; }],
    ["lower", function (v) { return /[a-zà-ÿ]/.test(v); }],
    ["upper", function (v) { return /[A-ZÀ-Þ]/.test(v); }],
    ["digit", function (v) { return /[0-9]/.test(v); }]
  ];
  function update(input, bar, text, list) {
    var value = input.value, passed = 0;
    RULES.forEach(function (rule) {
      var ok = rule[1](value);
      if (ok) { passed += 1; }
      var item = list && list.querySelector('[data-rule="' + rule[0] + '"]');
      if (item) { item.classList.toggle("ok", ok); }
    });
    // Empty (never typed, or sent back empty after a refused form): the rules wait, no ✗.
    if (list) { list.classList.toggle("pending", value === ""); }
    var strong = passed === RULES.length;
    bar.classList.toggle("ok", strong);
    bar.firstElementChild.style.width = (passed / RULES.length * 100) + "%";
    text.classList.toggle("ok", strong);
    text.textContent = value === "" ? "" : (strong ? "Mot de passe robuste" : "Mot de passe trop faible");
  }
  document.querySelectorAll("input[data-strength]").forEach(function (input) {
    var wrap = document.createElement("div");
    wrap.className = "strength";
    wrap.setAttribute("aria-hidden", "true");
    wrap.appendChild(document.createElement("span"));
    var text = document.createElement("p");
    text.className = "strength-text";
    text.id = input.id + "-strength";
    text.setAttribute("aria-live", "polite");
    input.insertAdjacentElement("afterend", text);
    input.insertAdjacentElement("afterend", wrap);
    var list = document.getElementById(input.getAttribute("data-strength"));
    input.addEventListener("input", function () { update(input, wrap, text, list); });
    update(input, wrap, text, list);
  });
})();
