// mmal review page: label with buttons or keys 1..9, undo with u, j/k to move. Posts are queued in order.
(function () {
  "use strict";
  var token = document.querySelector('meta[name="mmal-token"]').content;
  var batchMeta = document.querySelector('meta[name="mmal-batch"]');  // an earlier batch: posts name it
  var batchId = batchMeta ? Number(batchMeta.content) : null;
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var names = Array.prototype.map.call(cards.length ? cards[0].querySelectorAll(".lab") : [], function (b) {
    return b.dataset.name;
  });
  var annotator = document.getElementById("annotator");
  var statusEl = document.getElementById("status");
  var undoStack = [];
  var queue = Promise.resolve();
  var current = 0;

  if (!annotator.value) { annotator.value = localStorage.getItem("mmal-annotator") || ""; }
  annotator.addEventListener("change", function () { localStorage.setItem("mmal-annotator", annotator.value); });

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-MMAL-Token": token},
      body: JSON.stringify(batchId === null ? body : Object.assign({batch: batchId}, body))
    }).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { throw new Error(j.error || r.statusText); } return j; });
    });
  }
  function setCurrent(i) {
    if (!cards.length) { return; }
    current = Math.max(0, Math.min(cards.length - 1, i));
    cards.forEach(function (c, k) { c.classList.toggle("current", k === current); });
    cards[current].scrollIntoView({block: "nearest"});
  }
  function show(card, label, who) {
    card.dataset.label = label === null ? "" : String(label);
    card.classList.toggle("done", label !== null);
    card.querySelectorAll(".lab").forEach(function (b) { b.classList.toggle("chosen", String(label) === b.dataset.class); });
    card.querySelector(".who").textContent = label === null ? "" : "labeled " + names[label] + " by " + (who || "?") + " (serve)";
  }
  function progress(n, total) {
    document.getElementById("n-labeled").textContent = n;
    document.getElementById("progress-bar").value = n;
    document.body.dataset.labeled = n;
  }
  function nextUnlabeled(from) {
    for (var k = 1; k <= cards.length; k++) {
      var j = (from + k) % cards.length;
      if (cards[j].dataset.label === "") { return j; }
    }
    return from;
  }
  function enqueue(fn) {
    document.body.dataset.pending = String(Number(document.body.dataset.pending || 0) + 1);
    queue = queue.then(fn).catch(function (e) { statusEl.textContent = e.message; }).then(function () {
      document.body.dataset.pending = String(Number(document.body.dataset.pending) - 1);
    });
  }
  function label(i, cls) {
    var card = cards[i];
    if (cls >= names.length) { return; }
    setCurrent(nextUnlabeled(i));
    enqueue(function () {
      return post("/api/label", {item_id: card.dataset.item, label: cls, annotator: annotator.value}).then(function (j) {
        statusEl.textContent = "";
        undoStack.push({index: i, item_id: j.item_id, label: j.label, previous: j.previous});
        show(card, j.label, j.annotator);
        progress(j.labeled, j.total);
      });
    });
  }
  function undo() {
    enqueue(function () {
      var u = undoStack.pop();
      if (!u) { statusEl.textContent = "nothing to undo"; return; }
      return post("/api/undo", {item_id: u.item_id, label: u.label, previous: u.previous}).then(function (j) {
        statusEl.textContent = "";
        show(cards[u.index], j.label, u.previous ? u.previous.annotator : null);
        progress(j.labeled, j.total);
        setCurrent(u.index);
      });
    });
  }
  cards.forEach(function (card, i) {
    card.querySelectorAll(".lab").forEach(function (b) {
      b.addEventListener("click", function () { label(i, Number(b.dataset.class)); });
    });
    card.addEventListener("click", function (e) { if (!e.target.closest("button, audio, video")) { setCurrent(i); } });
    card.querySelectorAll(".lab").forEach(function (b) { b.classList.toggle("chosen", card.dataset.label === b.dataset.class); });
  });
  document.getElementById("undo").addEventListener("click", undo);
  document.addEventListener("keydown", function (e) {
    if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key >= "1" && e.key <= "9") { label(current, Number(e.key) - 1); e.preventDefault(); }
    else if (e.key === "u") { undo(); e.preventDefault(); }
    else if (e.key === "j" || e.key === "ArrowDown") { setCurrent(current + 1); e.preventDefault(); }
    else if (e.key === "k" || e.key === "ArrowUp") { setCurrent(current - 1); e.preventDefault(); }
  });
  setCurrent(cards.findIndex ? Math.max(0, cards.findIndex(function (c) { return c.dataset.label === ""; })) : 0);
  document.body.dataset.ready = "1";
})();
