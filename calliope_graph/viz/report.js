(function () {
  "use strict";
  function each(selector, fn) {
    var list = document.querySelectorAll(selector);
    for (var i = 0; i < list.length; i++) { fn(list[i]); }
  }
  function detail(name) {
    var found = null;
    each("article.node-detail", function (el) {
      if (el.getAttribute("data-node") === name) { found = el; }
    });
    return found;
  }
  function mark(name, on) {
    each("[data-node]", function (el) {
      if (el.getAttribute("data-node") === name) { el.classList.toggle("hover", on); }
    });
  }
  function show(name) {
    var el = detail(name);
    if (!el) { return; }
    el.scrollIntoView({behavior: "smooth", block: "start"});
    el.classList.add("flash");
    window.setTimeout(function () { el.classList.remove("flash"); }, 1400);
  }
  each("#drawing g.node[data-node], #timeline [data-node], a.node-link[data-node]",
    function (el) {
      var name = el.getAttribute("data-node");
      el.addEventListener("click", function (event) { event.preventDefault(); show(name); });
      el.addEventListener("mouseenter", function () { mark(name, true); });
      el.addEventListener("mouseleave", function () { mark(name, false); });
    });
})();
