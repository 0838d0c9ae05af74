"""The script, style and skeleton of the ``gradcli show`` page, inlined into every page.

Kept as Python strings (not package data files) so the page needs nothing but this module:
no packaging rule, no file to lose.  The script replays the walk that
:mod:`gradcli.render.html` computed; it computes no number itself.
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="gradcli show">
<title>%TITLE% · gradcli show</title>
<style>
%CSS%
</style>
</head>
<body>
<header>
  <h1><code id="program">%HEADING%</code></h1>
  %PROGRAM%
  <div id="notes"></div>
</header>
<main>
  <section id="graph" aria-label="the computational graph">
    <button id="zoom" title="fit the whole graph into the pane, or show it at its size"></button>
%SVG%
  </section>
  <aside>
    <div id="controls" role="group" aria-label="step control">
      <button id="first" title="first step (Home)">⇤</button>
      <button id="prev" title="previous step (←)">◀</button>
      <button id="play" title="play / pause (space)">▶ play</button>
      <button id="next" title="next step (→)">▶</button>
      <button id="last" title="last step (End)">⇥</button>
      <input id="slider" type="range" min="0" max="0" value="0" aria-label="step">
      <span id="counter"></span>
    </div>
    <div id="phase"></div>
    <div id="step" aria-live="polite"></div>
    <div id="legend"><span class="lg fw">forward: value carried</span>
      <span class="lg bw">backward: gradient sent</span>
      <span class="lg cur">current node</span><span class="lg rcv">receiving</span></div>
    <div id="detail"><p class="hint">Click a node to see its value and gradient in full,
      its derivative rule and the chain rule for it.</p></div>
  </aside>
</main>
<script type="application/json" id="gradcli-data">%DATA%</script>
<script>
%JS%
</script>
</body>
</html>
"""

CSS = r"""
:root { --fw: #444; --bw: #c0392b; --cur: #e67e22; --rcv: #2471a3; --ink: #222;
        --dim: 0.18; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; color: var(--ink); background: #fcfcfb; }
header { padding: 10px 18px 4px; border-bottom: 1px solid #e4e4e0; }
h1 { font-size: 18px; margin: 0 0 4px; font-weight: 600; }
h1 code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
#notes div { font-size: 13px; color: #7a5b00; }
#notes div.bad { color: #b03a2e; font-weight: 600; } #notes div.good { color: #1e8449; }
main { display: flex; gap: 0; align-items: stretch; height: calc(100vh - 64px);
       min-height: 420px; }
#graph { flex: 1 1 60%; min-width: 0; overflow: auto; padding: 12px; position: relative; }
#zoom { position: sticky; top: 0; left: 0; z-index: 2; font-size: 12px; padding: 2px 8px;
        border: 1px solid #ccc; background: #fff; border-radius: 4px; cursor: pointer;
        opacity: .85; display: block; margin-bottom: 4px; }
details.program pre { max-height: 30vh; overflow: auto; font-size: 13px; margin: 4px 0; }
aside { flex: 0 0 40%; max-width: 560px; padding: 12px 16px; border-left: 1px solid #e4e4e0;
        background: #fff; overflow: auto; }
#controls { display: flex; align-items: center; gap: 4px; flex-wrap: wrap; }
#controls button { font-size: 15px; padding: 3px 9px; border: 1px solid #bbb;
                   background: #f6f6f4; border-radius: 4px; cursor: pointer; }
#controls button:hover { background: #ecece8; }
#slider { flex: 1 1 120px; min-width: 100px; }
#counter { font-size: 13px; color: #555; min-width: 90px; text-align: right; }
#phase { margin-top: 10px; font-size: 12px; text-transform: uppercase; letter-spacing: .06em;
         color: #666; }
#phase.fwd { color: #333; } #phase.bwd { color: var(--bw); }
#step { margin-top: 4px; font-size: 15px; line-height: 1.45; min-height: 4.4em;
        font-family: ui-monospace, "DejaVu Sans Mono", monospace; white-space: pre-wrap;
        background: #f7f7f4; border-radius: 6px; padding: 8px 10px; }
#legend { margin: 8px 0; font-size: 12px; color: #555; display: flex; gap: 12px;
          flex-wrap: wrap; }
.lg::before { content: ""; display: inline-block; width: 18px; height: 0; margin-right: 4px;
              vertical-align: middle; border-top: 2px solid var(--fw); }
.lg.bw::before { border-top: 2px dashed var(--bw); }
.lg.cur::before { border: 3px solid var(--cur); height: 6px; width: 10px; }
.lg.rcv::before { border: 3px solid var(--rcv); height: 6px; width: 10px; }
#detail { border-top: 1px solid #eee; padding-top: 6px; font-size: 14px; }
#detail h2 { font-size: 16px; margin: 6px 0; }
#detail h2 small { font-weight: normal; color: #777; }
#detail .row { margin: 6px 0; }
#detail .k { color: #777; font-size: 12px; letter-spacing: .02em; }
#detail code, #detail pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
#detail pre { white-space: pre-wrap; margin: 2px 0; background: #f7f7f4; padding: 4px 6px;
              border-radius: 4px; }
.hint { color: #777; }
table.arr { border-collapse: collapse; font: 12px ui-monospace, monospace; margin: 3px 0; }
table.arr td { border: 1px solid #ddd; padding: 2px 5px; text-align: right; }
table.arr th { color: #999; font-weight: normal; padding: 0 4px; }
table.heat td { width: 22px; height: 22px; padding: 0; border: 1px solid #e8e8e4; }
.readout { font: 12px ui-monospace, monospace; color: #333; min-height: 1.3em; }
table.heat td:hover { outline: 2px solid #333; }
.chips span { display: inline-block; margin: 2px; padding: 1px 6px; border: 1px solid #ccc;
              border-radius: 10px; cursor: pointer; font-size: 12px; }
/* the graph: what the walk has not reached is faint, its numbers hidden */
g.node { cursor: pointer; }
g.node polygon, g.node ellipse, g.node path { pointer-events: all; }
g.graph > polygon { pointer-events: none; }
g.node.pending { opacity: var(--dim); }
g.node.pending text.v, g.node:not(.graded) text.g { visibility: hidden; }
g.node.current polygon, g.node.current ellipse, g.node.current path {
  stroke: var(--cur); stroke-width: 4px; }
g.node.recv polygon, g.node.recv ellipse, g.node.recv path {
  stroke: var(--rcv); stroke-width: 3px; }
g.node.selected:not(.fail):not(.kink) polygon, g.node.selected:not(.fail):not(.kink) ellipse {
  fill: #fdf2c8; }
g.node.fail polygon, g.node.fail ellipse { fill: #f5b7b1; }
g.node.kink polygon, g.node.kink ellipse { fill: #fad7a0; }
g.edge { opacity: 0.25; }
g.edge text { visibility: hidden; }
g.edge.lit { opacity: 1; }
g.edge.lit text { visibility: visible; }
g.edge[data-k^="b:"] { visibility: hidden; }
g.edge[data-k^="b:"].lit { visibility: visible; }
g.edge.now path { stroke-width: 3px; }
g.edge.now text { font-weight: bold; }
@media (max-width: 900px) { main { flex-direction: column; } aside { max-width: none;
  border-left: 0; border-top: 1px solid #e4e4e0; } }
"""

JS = r"""
(function () {
  "use strict";
  var T = { start: performance.now() };
  var D = JSON.parse(document.getElementById("gradcli-data").textContent);
  T.parsed = performance.now();
  var steps = D.steps, nodes = D.nodes, N = steps.length, M = nodes.length;
  var pos = {};                                // node id -> index in nodes
  for (var n = 0; n < M; n++) pos[nodes[n].id] = n;
  var $ = function (id) { return document.getElementById(id); };

  // ---- the drawn graph: boxes and edges, found once
  var svg = document.querySelector("#graph svg");
  var boxEl = [], boxNodes = [], edgeEl = [], edgeKey = [];
  if (svg) {
    var gs = svg.querySelectorAll("g.node[data-b]");
    for (var a = 0; a < gs.length; a++) boxEl[+gs[a].getAttribute("data-b")] = gs[a];
    var es = svg.querySelectorAll("g.edge[data-k]");
    for (var e = 0; e < es.length; e++) { edgeEl.push(es[e]); edgeKey.push(es[e].getAttribute("data-k")); }
    var t = svg.querySelector("title"); if (t && t.parentNode === svg.querySelector("g.graph")) t.textContent = "";
    // a small graph grows to fill its pane; a big one keeps its size and scrolls
    var w0 = svg.width.baseVal.value, h0 = svg.height.baseVal.value;
    var avail = $("graph").clientWidth - 24, availH = $("graph").clientHeight - 24;
    var fit = w0 > 0 && h0 > 0 ? Math.min(avail / w0, Math.max(availH, 240) / h0, 2.2) : 1;
    var scale = function (f) { svg.setAttribute("width", (w0 * f).toFixed(0) + "px");
                               svg.setAttribute("height", (h0 * f).toFixed(0) + "px"); };
    var fitted = fit >= 0.7;  // too small to read when fitted: natural size, and scroll
    if (fitted) scale(fit);
    $("zoom").textContent = fitted ? "actual size" : "fit to pane";
    $("zoom").onclick = function () {
      fitted = !fitted; scale(fitted ? fit : 1);
      $("zoom").textContent = fitted ? "actual size" : "fit to pane";
    };
  }
  T.indexed = performance.now();
  for (var n2 = 0; n2 < M; n2++) {
    var b = nodes[n2].box;
    if (b !== null && b !== undefined) (boxNodes[b] = boxNodes[b] || []).push(n2);
  }
  function boxOf(id) { var p = pos[id]; return p === undefined ? null : nodes[p].box; }
  function ekey(kind, i, j) {
    var a = boxOf(i), b = boxOf(j);
    if (a === null || b === null || a === undefined || b === undefined || a === b) return null;
    var ra = boxRank(a), rb = boxRank(b);
    return ra <= rb ? kind + ":" + a + ":" + b : kind + ":" + b + ":" + a;
  }
  var rankCache = {};
  function boxRank(b) {
    if (rankCache[b] === undefined) {
      var r = -1, ns = boxNodes[b] || [];
      for (var k = 0; k < ns.length; k++) r = Math.max(r, nodes[ns[k]].id);
      rankCache[b] = r;
    }
    return rankCache[b];
  }
  // the edge keys each step lights, computed once
  var stepKeys = steps.map(function (st) {
    var ks = [];
    (st.f || []).forEach(function (p) { var k = ekey("f", p[0], p[1]); if (k) ks.push(k); });
    (st.b || []).forEach(function (p) { var k = ekey("b", p[0], p[1]); if (k) ks.push(k); });
    return ks;
  });

  // ---- the state after step s, replayed from the start (cheap: a few entries per step)
  function stateAt(s) {
    var val = new Uint8Array(M), done = new Uint8Array(M), grad = new Array(M), lit = {};
    for (var k = 0; k <= s; k++) {
      var st = steps[k], x;
      if (st.v) for (x = 0; x < st.v.length; x++) val[pos[st.v[x]]] = 1;
      if (st.g) for (x = 0; x < st.g.length; x++) grad[pos[st.g[x][0]]] = st.g[x][1];
      if (st.d) for (x = 0; x < st.d.length; x++) done[pos[st.d[x]]] = 1;
      var ks = stepKeys[k];
      for (x = 0; x < ks.length; x++) lit[ks[x]] = k;
    }
    return { val: val, done: done, grad: grad, lit: lit, step: s };
  }

  var checkMarks = D.check || {};
  var boxCheck = [];
  Object.keys(checkMarks).forEach(function (id) {
    var b = boxOf(+id); if (b !== null && b !== undefined) boxCheck[b] = checkMarks[id].status;
  });

  var cur = -1, S = null, selected = null, shown = [], shownE = [];
  function render() {
    var st = steps[cur];
    var curBox = st.n === null || st.n === undefined ? null : boxOf(st.n);
    var recv = {};
    (st.b || []).forEach(function (p) { var bb = boxOf(p[1]); if (bb !== null) recv[bb] = 1; });
    for (var b = 0; b < boxEl.length; b++) {
      var el = boxEl[b]; if (!el) continue;
      var ns = boxNodes[b] || [], anyVal = 0, anyDone = 0;
      for (var k = 0; k < ns.length; k++) { anyVal |= S.val[ns[k]]; anyDone |= S.done[ns[k]]; }
      var cls = "node" + (anyVal ? " computed" : " pending") + (anyDone ? " graded" : "") +
        (b === curBox ? " current" : "") + (recv[b] ? " recv" : "") +
        (selected !== null && nodes[selected].box === b ? " selected" : "") +
        (boxCheck[b] ? " " + boxCheck[b] : "");
      if (shown[b] !== cls) { el.setAttribute("class", cls); shown[b] = cls; }
    }
    if (curBox !== null && curBox !== undefined && boxEl[curBox] && boxEl[curBox].scrollIntoView)
      boxEl[curBox].scrollIntoView({ block: "nearest", inline: "nearest" });
    for (var x = 0; x < edgeEl.length; x++) {
      var w = S.lit[edgeKey[x]];
      var c = "edge" + (w !== undefined ? " lit" : "") + (w === cur ? " now" : "");
      if (shownE[x] !== c) { edgeEl[x].setAttribute("class", c); shownE[x] = c; }
    }
    $("step").textContent = st.t;
    var ph = $("phase");
    var nf = D.forwardCount, phase;
    if (st.k === "start") phase = "start";
    else if (st.k === "fwd") phase = "forward pass · node " + cur + " of " + nf;
    else if (st.k === "turn") phase = "forward pass done · reverse pass next";
    else if (st.k === "bwd") phase = "reverse pass · step " + (cur - nf - 1) + " of " + D.backwardCount;
    else phase = "done";
    ph.textContent = phase;
    ph.className = st.k;
    $("counter").textContent = "step " + cur + " / " + (N - 1);
    $("slider").value = cur;
    if (selected !== null) detail(selected);
  }

  function go(s, keepHash) {
    s = Math.max(0, Math.min(N - 1, s | 0));
    if (s === cur) return;
    cur = s; S = stateAt(s); render();
    if (!keepHash) {
      try { history.replaceState(null, "", "#step=" + s); } catch (err) { /* file: may refuse */ }
    }
  }
  function fromHash() {
    var m = /step=(\d+)/.exec(location.hash || "");
    return m ? +m[1] : 0;
  }

  // ---- the node panel
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) {
    return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; }); }
  function numText(v) { return typeof v === "number" ? String(v) : String(v); }
  function arrayHTML(emb, shape) {
    var a = emb.a;
    if (!Array.isArray(a)) return "<code class='num'>" + esc(numText(a)) + "</code>";
    var note = emb.corner ? "<div class='hint'>top-left " + emb.corner[0] + "×" + emb.corner[1] +
      " of " + shape.join("×") + "</div>" : emb.flat ? "<div class='hint'>first " + emb.flat +
      " of " + shape.reduce(function (p, q) { return p * q; }, 1) + " elements (flattened)</div>" : "";
    if (shape.length === 2 || (emb.corner)) return heat(a) + note;
    var flat = [];
    (function walk(x) { if (Array.isArray(x)) x.forEach(walk); else flat.push(x); })(a);
    var h = "<table class='arr'><tr>";
    for (var i = 0; i < flat.length; i++) {
      if (i && i % 8 === 0) h += "</tr><tr>";
      h += "<td title='[" + i + "]'>" + esc(numText(flat[i])) + "</td>";
    }
    return h + "</tr></table>" + (shape.length > 2 ? "<div class='hint'>shape " +
      shape.join("×") + ", flattened in C order</div>" : "") + note;
  }
  function heat(rows) {
    var mx = 0;
    rows.forEach(function (r) { r.forEach(function (v) {
      if (typeof v === "number" && Math.abs(v) > mx) mx = Math.abs(v); }); });
    var h = "<table class='arr heat'>";
    rows.forEach(function (r, i) {
      h += "<tr>";
      r.forEach(function (v, j) {
        var bg = "#ccc";
        if (typeof v === "number") {
          var t = mx ? v / mx : 0;
          bg = t >= 0 ? "rgba(192,57,43," + t.toFixed(3) + ")" : "rgba(36,113,163," + (-t).toFixed(3) + ")";
        }
        h += "<td style='background:" + bg + "' title='[" + i + ", " + j + "] = " + esc(numText(v)) + "'></td>";
      });
      h += "</tr>";
    });
    return h + "</table><div class='readout'>&nbsp;</div>";
  }
  function detail(p) {
    var nd = nodes[p], h = "";
    h += "<h2>" + esc(nd.label) + " <small>" + esc(nd.op) + (nd.text && nd.text !== nd.label ?
      " · " + esc(nd.text) : "") + "</small></h2>";
    var doc = (D.ops || {})[nd.op];
    if (doc) h += "<div class='hint'>" + esc(doc) + "</div>";
    var at = D.forward[nd.id];
    h += "<div class='row'><div class='k'>value" + (nd.shape.length ? " · shape (" +
      nd.shape.join(", ") + ")" : "") + "</div><div id='detail-value'>";
    h += S.val[p] ? arrayHTML(nd.V, nd.shape) : "<span class='hint'>not computed yet" +
      (at !== undefined ? " (forward step " + at + ")" : "") + "</span>";
    h += "</div></div><div class='row'><div class='k'>gradient ∂" + esc(D.output) + "/∂" +
      esc(nd.label) + "</div><div id='detail-grad'>";
    if (nd.G === null) h += "<span class='hint'>none: " + esc(D.output) + " sends no gradient here</span>";
    else if (S.done[p]) h += arrayHTML(nd.G, nd.shape);
    else if (S.grad[p]) h += "<span class='hint'>so far:</span> <code>" + esc(S.grad[p]) + "</code>";
    else h += "<span class='hint'>not arrived yet</span>";
    h += "</div></div>";
    if (nd.rule.length) h += "<div class='row'><div class='k'>derivative rule</div><pre>" +
      esc(nd.rule.join("\n")) + "</pre></div>";
    if (nd.explain) h += "<div class='row'><div class='k'>chain rule</div><pre id='detail-explain'>" +
      esc(nd.explain.join("\n")) + "</pre></div>";
    var others = nd.box === null ? [] : (boxNodes[nd.box] || []);
    if (others.length > 1) {
      h += "<div class='row'><div class='k'>in this box</div><div class='chips'>";
      others.forEach(function (q) { h += "<span data-p='" + q + "'>" + esc(nodes[q].label) + "</span>"; });
      h += "</div></div>";
    }
    var cm = checkMarks[nd.id];
    if (cm) h += "<div class='row'><div class='k'>check: " + esc(cm.status) + "</div><pre>" +
      esc(cm.text) + "</pre></div>";
    $("detail").innerHTML = h;
  }
  function select(p) { selected = p; shown = []; render(); }

  // ---- controls
  var timer = null;
  function play() {
    if (timer) { clearInterval(timer); timer = null; $("play").textContent = "▶ play"; return; }
    if (cur >= N - 1) go(0);
    $("play").textContent = "⏸ pause";
    timer = setInterval(function () { if (cur >= N - 1) play(); else go(cur + 1); }, 900);
  }
  $("first").onclick = function () { go(0); };
  $("prev").onclick = function () { go(cur - 1); };
  $("next").onclick = function () { go(cur + 1); };
  $("last").onclick = function () { go(N - 1); };
  $("play").onclick = play;
  var sl = $("slider"); sl.max = N - 1;
  sl.oninput = function () { go(+sl.value); };
  document.addEventListener("keydown", function (ev) {
    if (ev.target === sl || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowRight") { go(cur + 1); ev.preventDefault(); }
    else if (ev.key === "ArrowLeft") { go(cur - 1); ev.preventDefault(); }
    else if (ev.key === "Home") { go(0); ev.preventDefault(); }
    else if (ev.key === "End") { go(N - 1); ev.preventDefault(); }
    else if (ev.key === " " && ev.target.tagName !== "BUTTON") { play(); ev.preventDefault(); }
  });
  if (svg) svg.addEventListener("click", function (ev) {
    var g = ev.target.closest ? ev.target.closest("g.node[data-b]") : null;
    if (!g) return;
    var ns = boxNodes[+g.getAttribute("data-b")] || [];
    var best = null;
    ns.forEach(function (q) { if (best === null || nodes[q].id > nodes[best].id) best = q; });
    if (best !== null) select(best);
  });
  $("detail").addEventListener("mouseover", function (ev) {  // a heat map's numbers on hover
    var td = ev.target;
    if (td.tagName !== "TD" || !td.title) return;
    var table = td.closest("table.heat");
    var out = table && table.nextElementSibling;
    if (out && out.className === "readout") out.textContent = td.title;
  });
  $("detail").addEventListener("click", function (ev) {
    var q = ev.target.getAttribute && ev.target.getAttribute("data-p");
    if (q !== null && q !== undefined) select(+q);
  });
  window.addEventListener("hashchange", function () { go(fromHash(), true); });
  var notes = $("notes");
  (D.notes || []).forEach(function (s) {
    var d = document.createElement("div"); d.textContent = s;
    d.className = /^(FAIL|blame)/.test(s) ? "bad" : /^PASS/.test(s) ? "good" : "";
    notes.appendChild(d);
  });
  window.gradcliShow = { go: go, steps: N, select: function (id) { select(pos[id]); },
                         current: function () { return cur; } };
  go(fromHash(), true);
  window.gradcliShow.readyAt = T.ready = performance.now();  // ms since the page began to load
  window.gradcliShow.timing = T;
  document.documentElement.setAttribute("data-ready", "1");
})();
"""
