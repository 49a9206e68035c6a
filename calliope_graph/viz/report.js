(function () {
  "use strict";
  function each(selector, fn, root) {
    var list = (root || document).querySelectorAll(selector);
    for (var i = 0; i < list.length; i++) { fn(list[i]); }
  }
  function strip(name) { return name.replace(/\[\d+\]/g, ""); }
  function detail(name) {
    // The node's article, else a nested block (a map item, a node inside a subflow), else
    // the first nested block of that drawing id (a node inside a map: its first item).
    var found = null;
    each("article.node-detail, details.nested-detail", function (el) {
      if (!found && el.getAttribute("data-node") === name) { found = el; }
    });
    if (!found) {
      each("details.nested-detail", function (el) {
        if (!found && el.getAttribute("data-base") === strip(name)) { found = el; }
      });
    }
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
    for (var up = el; up; up = up.parentElement) {
      if (up.tagName === "DETAILS") { up.open = true; }
    }
    el.scrollIntoView({behavior: "smooth", block: "start"});
    el.classList.add("flash");
    window.setTimeout(function () { el.classList.remove("flash"); }, 1400);
  }
  each("#drawing g.node[data-node], #timeline g.lane[data-node], #timeline .bar[data-node], " +
    "#timeline .envelope[data-node], a.node-link[data-node]",
    function (el) {
      var name = el.getAttribute("data-node");
      el.addEventListener("click", function (event) {
        event.preventDefault();
        event.stopPropagation();  // a node inside a subflow cluster: not the cluster too
        show(name);
      });
      el.addEventListener("mouseenter", function () { mark(name, true); });
      el.addEventListener("mouseleave", function () { mark(name, false); });
    });

  // Subflow clusters in the drawing: the − / + button folds the child flow away.
  function toggleCluster(button, event) {
    event.preventDefault();
    event.stopPropagation();
    var cluster = button.closest("g.cluster");
    if (!cluster) { return; }
    var folded = cluster.classList.toggle("collapsed");
    var glyph = button.querySelector(".cluster-toggle-glyph");
    if (glyph) { glyph.textContent = folded ? "+" : "\u2212"; }
  }
  each("#drawing .cluster-toggle", function (button) {
    button.addEventListener("click", function (event) { toggleCluster(button, event); });
    button.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { toggleCluster(button, event); }
    });
  });

  // Timeline lanes nest (map items, subflow nodes): fold a lane's children and restack.
  each("#timeline svg.timeline", function (svg) {
    var rows = [];
    each("g.lane-row", function (row) { rows.push(row); }, svg);
    var byLane = {};
    rows.forEach(function (row) { byLane[row.getAttribute("data-lane")] = row; });
    var top = parseFloat(svg.getAttribute("data-top") || "30");
    var rowH = parseFloat(svg.getAttribute("data-row") || "26");
    var width = svg.viewBox.baseVal.width;
    function hidden(row) {
      var parent = row.getAttribute("data-parent");
      while (parent) {
        var up = byLane[parent];
        if (!up) { return false; }
        if (up.getAttribute("data-folded") === "1") { return true; }
        parent = up.getAttribute("data-parent");
      }
      return false;
    }
    function restack() {
      var y = top;
      rows.forEach(function (row) {
        if (hidden(row)) {
          row.setAttribute("display", "none");
        } else {
          row.removeAttribute("display");
          row.setAttribute("transform", "translate(0," + y + ")");
          y += rowH;
        }
      });
      var height = y + 12;
      svg.setAttribute("viewBox", "0 0 " + width + " " + height);
      each("line.tick, line.now", function (line) { line.setAttribute("y2", height - 8); }, svg);
      each("text.now-label", function (t) { t.setAttribute("y", height - 1); }, svg);
    }
    each("g.tl-toggle", function (button) {
      function flip(event) {
        event.preventDefault();
        event.stopPropagation();
        var row = button.closest("g.lane-row");
        var folded = row.getAttribute("data-folded") === "1";
        row.setAttribute("data-folded", folded ? "0" : "1");
        var glyph = button.querySelector(".tl-toggle-glyph");
        if (glyph) { glyph.textContent = folded ? "\u2212" : "+"; }
        restack();
      }
      button.addEventListener("click", flip);
      button.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { flip(event); }
      });
    }, svg);
    restack();
  });
})();
