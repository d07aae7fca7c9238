// mmal review page: the data-set view (filters, paging, embedding map, item panel) and the suspect-labels view.
// Data come from /api/items, /api/map and /api/suspects; labels are posted to /api/label with scope "dataset".
(function () {
  "use strict";
  var token = document.querySelector('meta[name="mmal-token"]').content;
  var names = JSON.parse(document.body.dataset.names || "[]");
  var statusEl = document.getElementById("status");
  var annotator = document.getElementById("annotator");
  // 20 distinguishable colours (matplotlib's tab20 reordered: dark shades first); classes beyond 20 repeat them
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79",
                 "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d", "#637939"];
  var NONE = "#c8c8c8";
  var pending = 0;

  if (!annotator.value) { annotator.value = localStorage.getItem("mmal-annotator") || ""; }
  annotator.addEventListener("change", function () { localStorage.setItem("mmal-annotator", annotator.value); });

  function colour(k) { return k === null || k === undefined || k < 0 ? NONE : PALETTE[k % PALETTE.length]; }
  function busy(d) { pending += d; document.body.dataset.pending = String(pending); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "class") { e.className = attrs[k]; } else if (k.slice(0, 5) === "data-") { e.setAttribute(k, attrs[k]); } else { e[k] = attrs[k]; }
    });
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }
  function getJSON(url) {
    busy(1);
    return fetch(url, {credentials: "same-origin", headers: {"X-MMAL-Token": token}}).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || r.statusText); } return j; });
    }).finally(function () { busy(-1); });
  }
  function post(url, body) {
    busy(1);
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-MMAL-Token": token}, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || r.statusText); } return j; });
    }).finally(function () { busy(-1); });
  }
  function fail(e) { statusEl.textContent = e.message; }
  function pct(p) { return p === null || p === undefined ? "–" : Math.round(100 * p) + "%"; }
  function pct1(p) { return p === null || p === undefined ? "–" : (100 * p).toFixed(1) + "%"; }
  function thumb(it) {
    var q = encodeURIComponent(it.id);
    if (it.media.image) { return el("img", {"class": "thumb", src: "/media/" + q + "/image", alt: "image of " + it.id, loading: "lazy"}); }
    if (it.media.video) { return el("img", {"class": "thumb", src: "/media/" + q + "/frames", alt: "frames of " + it.id, loading: "lazy"}); }
    return el("span", {"class": "muted"}, it.media.audio ? "♪" : "");
  }
  function itemCell(it) {
    var td = el("td", {"class": "item-cell"});
    td.appendChild(el("b", {}, it.id));
    if (it.text) { td.appendChild(el("div", {"class": "text"}, it.text)); }
    return td;
  }
  function labelPost(itemId, cls) {
    return post("/api/label", {item_id: itemId, label: cls, annotator: annotator.value, scope: "dataset"});
  }
  function pager(total, offset, limit, go) {
    document.getElementById("range").textContent = total === 0 ? "no items" :
      (offset + 1) + "–" + Math.min(total, offset + limit) + " of " + total;
    var prev = document.getElementById("prev"), next = document.getElementById("next");
    prev.disabled = offset <= 0;
    next.disabled = offset + limit >= total;
    prev.onclick = function () { go(Math.max(0, offset - limit)); };
    next.onclick = function () { go(offset + limit); };
  }

  // ---- the data-set view ----------------------------------------------------------------
  function datasetView() {
    var form = document.getElementById("filters");
    var tbody = document.querySelector("#items tbody");
    var canvas = document.getElementById("map");
    var ctx = canvas.getContext("2d");
    var colourBy = document.getElementById("colour");
    var map = null, px = [], onPage = {}, current = null;
    var offset = 0;

    var initial = new URLSearchParams(location.search);
    Array.prototype.forEach.call(form.elements, function (f) { if (f.name && initial.has(f.name)) { f.value = initial.get(f.name); } });
    offset = Number(initial.get("offset") || 0);

    function params() {
      var p = new URLSearchParams();
      Array.prototype.forEach.call(form.elements, function (f) { if (f.name && f.value !== "") { p.set(f.name, f.value); } });
      return p;
    }
    function load(off) {
      offset = off;
      var p = params();
      if (offset) { p.set("offset", String(offset)); }
      history.replaceState(null, "", "/dataset" + (p.toString() ? "?" + p.toString() : ""));
      return getJSON("/api/items?" + p.toString()).then(function (j) {
        statusEl.textContent = "";
        tbody.textContent = "";
        onPage = {};
        j.items.forEach(function (it) {
          onPage[it.id] = true;
          var tr = el("tr", {"class": "row", "data-item": it.id});
          var t = el("td"); t.appendChild(thumb(it)); tr.appendChild(t);
          tr.appendChild(itemCell(it));
          tr.appendChild(el("td", {}, it.split));
          var lab = el("td", {"class": "lab-name"});
          if (it.label_name !== null) { lab.appendChild(el("span", {"class": "dot"})).style.background = colour(it.label); }
          lab.appendChild(document.createTextNode(it.label_name === null ? "—" : it.label_name));
          tr.appendChild(lab);
          tr.appendChild(el("td", {}, it.pred_name === null ? "—" : it.pred_name + " (" + pct(it.confidence) + ")"));
          tr.appendChild(el("td", {}, it.batches.join(", ")));
          tr.addEventListener("click", function () { openItem(it.id); });
          tbody.appendChild(tr);
        });
        pager(j.total, j.offset, j.limit, load);
        document.body.dataset.total = String(j.total);
        draw();
      }).catch(fail);
    }
    function loadMap() {
      return getJSON("/api/map").then(function (j) {
        var note = document.getElementById("map-note");
        if (!j.n_shown) { note.textContent = j.note || "nothing to draw"; return; }
        map = j;
        var s = "PCA of the stored embedding (scored pool of round " + j.pool.round + "; the two axes explain " +
          pct(j.explained[0]) + " and " + pct(j.explained[1]) + " of its variance). ";
        s += j.sampled ? "Showing a random " + j.n_shown + " of " + j.n_total + " items (seed 0)." : "All " + j.n_shown + " items.";
        if (j.n_nonfinite) { s += " " + j.n_nonfinite + " items with a non-finite embedding are left out."; }
        note.textContent = s + " Click a point to open the item; rings mark this page's items.";
        draw();
        canvas.dataset.ready = "1";
      }).catch(fail);
    }
    function draw() {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      if (!map) { return; }
      var pad = 12, w = canvas.width - 2 * pad, h = canvas.height - 2 * pad;
      var x0 = Math.min.apply(null, map.x), x1 = Math.max.apply(null, map.x);
      var y0 = Math.min.apply(null, map.y), y1 = Math.max.apply(null, map.y);
      var sx = w / ((x1 - x0) || 1), sy = h / ((y1 - y0) || 1);
      var by = colourBy.value === "pred" ? map.pred : map.label;
      px = map.x.map(function (x, i) { return [pad + (x - x0) * sx, pad + h - (map.y[i] - y0) * sy]; });
      var r = map.n_shown > 1500 ? 2.5 : 4;
      for (var pass = 0; pass < 2; pass++) {  // unlabeled (grey) first, so labeled points stay visible
        px.forEach(function (p, i) {
          var none = by[i] < 0;
          if ((pass === 0) !== none) { return; }
          ctx.beginPath();
          ctx.fillStyle = colour(by[i]);
          ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
          ctx.fill();
        });
      }
      px.forEach(function (p, i) {
        if (onPage[map.ids[i]] || map.ids[i] === current) {
          ctx.beginPath();
          ctx.strokeStyle = map.ids[i] === current ? "#000" : "#444";
          ctx.lineWidth = map.ids[i] === current ? 2.5 : 1;
          ctx.arc(p[0], p[1], r + 3, 0, 2 * Math.PI);
          ctx.stroke();
        }
      });
      var legend = document.getElementById("legend");
      legend.textContent = "";
      names.forEach(function (n, k) {
        var s = el("span", {"class": "key"});
        s.appendChild(el("span", {"class": "dot"})).style.background = colour(k);
        s.appendChild(document.createTextNode(n));
        legend.appendChild(s);
      });
      if (colourBy.value === "label") {
        var s = el("span", {"class": "key"});
        s.appendChild(el("span", {"class": "dot"})).style.background = NONE;
        s.appendChild(document.createTextNode("unlabeled"));
        legend.appendChild(s);
      }
    }
    canvas.addEventListener("click", function (e) {
      if (!map) { return; }
      var b = canvas.getBoundingClientRect();
      var x = (e.clientX - b.left) * canvas.width / b.width, y = (e.clientY - b.top) * canvas.height / b.height;
      var best = -1, bd = 100;  // within 10 canvas pixels
      px.forEach(function (p, i) {
        var d = (p[0] - x) * (p[0] - x) + (p[1] - y) * (p[1] - y);
        if (d < bd) { bd = d; best = i; }
      });
      if (best >= 0) { openItem(map.ids[best]); }
    });
    colourBy.addEventListener("change", draw);
    // for tests and scripts: the canvas pixel of an item's point (null when it is not drawn)
    window.mmalMap = {pixelOf: function (id) { var i = map ? map.ids.indexOf(id) : -1; return i < 0 ? null : px[i]; }};

    function openItem(id) {
      current = id;
      draw();
      return getJSON("/api/items?id=" + encodeURIComponent(id)).then(function (j) {
        var it = j.items[0];
        if (!it) { throw new Error("item " + id + " not found"); }
        var panel = document.getElementById("detail");
        panel.hidden = false;
        panel.dataset.item = it.id;
        document.getElementById("d-id").textContent = it.id;
        var m = document.getElementById("d-media");
        m.textContent = "";
        var q = encodeURIComponent(it.id);
        if (it.media.image) { m.appendChild(el("img", {"class": "media", src: "/media/" + q + "/image", alt: "image of " + it.id})); }
        if (it.media.video) {
          m.appendChild(el("img", {"class": "media frames", src: "/media/" + q + "/frames", alt: "frames of " + it.id}));
          m.appendChild(el("video", {"class": "media", src: "/media/" + q + "/video", controls: true, preload: "none"}));
        }
        if (it.text) { m.appendChild(el("p", {"class": "text"}, it.text)); }
        if (it.media.audio) { m.appendChild(el("audio", {src: "/media/" + q + "/audio", controls: true, preload: "none"})); }
        var info = "split " + it.split + " · label " + (it.label_name === null ? "none" : it.label_name);
        if (it.pred_name !== null) {
          info += " · model: " + it.top.map(function (t) { return t[0] + " " + pct(t[1]); }).join(", ");
        }
        if (it.batches.length) { info += " · batches " + it.batches.join(", "); }
        document.getElementById("d-info").textContent = info;
        var bs = document.getElementById("d-buttons");
        bs.textContent = "";
        document.getElementById("d-who").textContent = it.split === "test" ? "test-split item: its gold label is not changed here" : "";
        if (it.split !== "test") {
          names.forEach(function (n, k) {
            var b = el("button", {type: "button", "class": "lab" + (it.label === k ? " chosen" : ""), "data-class": String(k)}, n);
            b.addEventListener("click", function () {
              labelPost(it.id, k).then(function (r) {
                statusEl.textContent = r.warning || "";
                document.getElementById("d-who").textContent = "labeled " + r.label_name + " by " + (r.annotator || "?") + " (round " + r.round + ")";
                bs.querySelectorAll(".lab").forEach(function (x) { x.classList.toggle("chosen", x.dataset.class === String(k)); });
                if (map) { var i = map.ids.indexOf(it.id); if (i >= 0) { map.label[i] = k; } }
                load(offset);
              }).catch(fail);
            });
            bs.appendChild(b);
          });
        }
      }).catch(fail);
    }
    document.getElementById("close").addEventListener("click", function () { document.getElementById("detail").hidden = true; current = null; draw(); });
    form.addEventListener("submit", function (e) { e.preventDefault(); load(0); });
    Promise.all([load(offset), loadMap()]).then(function () { document.body.dataset.ready = "1"; });
  }

  // ---- the suspect-labels view ----------------------------------------------------------
  function suspectsView() {
    var tbody = document.querySelector("#suspects tbody");
    var inSample = document.getElementById("in-sample");
    var offset = 0, limit = 50;

    function load(off) {
      offset = off;
      var p = new URLSearchParams({offset: String(offset), limit: String(limit)});
      if (inSample.checked) { p.set("in_sample", "yes"); }
      return getJSON("/api/suspects?" + p.toString()).then(function (j) {
        statusEl.textContent = "";
        var c = j.counts || {};
        var summary = document.getElementById("summary");
        if (j.pool) {
          summary.textContent = j.n_labeled + " labeled items in the scored pool; " + j.n_out_of_sample +
            " have an out-of-sample prediction (" + (c["held-out"] || 0) + " test split, " + (c["labeled-after-scoring"] || 0) +
            " labeled after scoring, " + (c["at-selection"] || 0) + " at selection); " + (c["in-sample"] || 0) +
            " only an in-sample one" + (j.in_sample ? " (shown, marked in-sample)" : " (not shown)") + ". " + j.total + " suspect.";
        }
        var note = document.getElementById("note");
        note.hidden = !j.note;
        note.textContent = j.note || "";
        tbody.textContent = "";
        j.items.forEach(function (it) {
          var tr = el("tr", {"class": "row" + (it.source === "in-sample" ? " in-sample" : ""), "data-item": it.id});
          var t = el("td"); t.appendChild(thumb(it)); tr.appendChild(t);
          tr.appendChild(itemCell(it));
          var lab = el("td", {"class": "lab-name"}, it.label_name);
          tr.appendChild(lab);
          tr.appendChild(el("td", {}, it.judged_pred_name + " (" + pct(it.judged_conf) + ")"));
          tr.appendChild(el("td", {}, pct1(it.self_confidence)));
          tr.appendChild(el("td", {title: it.source_text}, it.source + (it.split === "test" ? " (test)" : "")));
          var cell = el("td");
          var bt = cell.appendChild(el("div", {"class": "buttons"}));
          if (it.split === "test") {
            bt.appendChild(el("span", {"class": "muted"}, "gold test label: not changed here"));
          } else {
            names.forEach(function (n, k) {
              var b = el("button", {type: "button", "class": "lab" + (it.label === k ? " chosen" : "") + (it.judged_pred === k ? " suggested" : ""),
                                    "data-class": String(k), "data-name": n}, n);
              b.addEventListener("click", function () {
                labelPost(it.id, k).then(function (r) {
                  statusEl.textContent = r.warning || "";
                  lab.textContent = r.label_name;
                  tr.classList.add("done");
                  bt.querySelectorAll(".lab").forEach(function (x) { x.classList.toggle("chosen", x.dataset.class === String(k)); });
                  var u = el("button", {type: "button", "class": "undo"}, "undo");
                  u.addEventListener("click", function () {
                    post("/api/undo", {item_id: it.id, label: r.label, previous: r.previous, scope: "dataset", round: r.round}).then(function (v) {
                      lab.textContent = v.label === null ? "—" : names[v.label];
                      tr.classList.remove("done");
                      u.remove();
                      bt.querySelectorAll(".lab").forEach(function (x) { x.classList.toggle("chosen", x.dataset.class === String(v.label)); });
                    }).catch(fail);
                  });
                  bt.appendChild(u);
                }).catch(fail);
              });
              bt.appendChild(b);
            });
          }
          tr.appendChild(cell);
          tbody.appendChild(tr);
        });
        pager(j.total, j.offset, j.limit, load);
        document.body.dataset.total = String(j.total);
      }).catch(fail);
    }
    inSample.addEventListener("change", function () { load(0); });
    load(0).then(function () { document.body.dataset.ready = "1"; });
  }

  document.body.dataset.pending = "0";
  if (document.body.dataset.view === "dataset") { datasetView(); } else { suspectsView(); }
})();
