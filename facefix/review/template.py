"""The review page's HTML, CSS and JavaScript, all inline (the page works from the file system, with no
server and no network). :mod:`facefix.review.page` fills in ``__TITLE__`` and ``__DATA__`` (JSON, with
``</`` escaped so no name can close the script element).

The cards are drawn from the data in chunks as the page scrolls (only what has
been scrolled to is in the document), so 10,000 photos stay fast; images load
lazily. Everything from the data is put in the page as text, never as HTML.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>
:root { --bg:#16181c; --card:#22252b; --fg:#e8e8e8; --dim:#9aa0a8; --accent:#5fb3ff; --bad:#ff6b6b; --warn:#f0b43c; --ok:#5ccf7a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:14px/1.4 system-ui, sans-serif; }
header { position:sticky; top:0; z-index:5; background:#101216; padding:8px 16px; border-bottom:1px solid #333;
         display:flex; flex-wrap:wrap; gap:8px 16px; align-items:center; }
header h1 { font-size:16px; margin:0; }
header label { color:var(--dim); }
header select, header input { background:#22252b; color:var(--fg); border:1px solid #444; border-radius:4px; padding:3px 6px; }
#counts, #shown { color:var(--dim); }
#notes { padding:0 16px; color:var(--warn); }
#notes p { margin:8px 0; }
kbd { border:1px solid #555; border-radius:3px; padding:0 4px; font-size:12px; }
main { display:grid; grid-template-columns:repeat(auto-fill, minmax(380px, 1fr)); gap:16px; padding:16px; align-items:start; }
.card { background:var(--card); border-radius:8px; padding:10px; outline:none; border:2px solid transparent; min-width:0;
        scroll-margin-top:90px; }  /* a card stepped to is not hidden under the header */
.card:focus, .card.current { border-color:var(--accent); }
.card h2 { font-size:13px; font-weight:600; margin:0 0 6px; overflow-wrap:anywhere; }
.badge { display:inline-block; font-size:12px; padding:0 6px; border-radius:8px; margin-right:6px; color:#111; }
.s-restored { background:var(--ok); } .s-failed { background:var(--bad); } .s-no-face { background:#aaa; }
.s-skipped { background:#8ab4f8; } .s-not-read { background:var(--warn); }
.why { color:var(--dim); font-size:12px; overflow-wrap:anywhere; }
.error { color:var(--bad); font-size:12px; overflow-wrap:anywhere; margin:4px 0; }
.note { color:var(--warn); font-size:12px; margin:4px 0; }
.cmp { position:relative; width:100%; max-height:520px; overflow:hidden; cursor:ew-resize; touch-action:none;
       user-select:none; background:#000; border-radius:4px; }
.cmp img { position:absolute; inset:0; width:100%; height:100%; object-fit:contain; display:block;
           pointer-events:none; }
.cmp .before { position:absolute; inset:0; clip-path:inset(0 50% 0 0); }
.cmp .handle { position:absolute; top:0; bottom:0; left:50%; width:2px; margin-left:-1px; background:#fff;
               box-shadow:0 0 3px #000; pointer-events:none; }
.cmp .tag { position:absolute; top:4px; font-size:11px; background:rgba(0,0,0,.6); padding:0 4px; border-radius:3px;
            pointer-events:none; }
.cmp .tag.b { left:4px; } .cmp .tag.a { right:4px; }
.single { width:100%; display:block; border-radius:4px; }
.faces { display:flex; flex-wrap:wrap; gap:8px; margin-top:8px; }
.face { width:128px; }
.face .cap { font-size:11px; color:var(--dim); overflow-wrap:anywhere; }
.face .cap b { color:var(--fg); font-weight:600; }
.links { font-size:12px; margin-top:6px; }
.links a { color:var(--accent); margin-right:10px; }
#more { height:40px; }
#empty { padding:40px; text-align:center; color:var(--dim); }
</style>
</head>
<body>
<header>
  <h1>facefix review</h1>
  <span id="counts"></span>
  <label>status <select id="f-status">
    <option value="">all</option><option value="restored">restored</option><option value="failed">failed</option>
    <option value="no face">no face</option><option value="skipped">skipped</option><option value="not read">not read</option>
    <option value="problems">failed or not read</option>
  </select></label>
  <label>person <select id="f-person"><option value="">all</option></select></label>
  <label>name <input id="f-name" type="search" placeholder="part of the file name"></label>
  <span id="shown"></span>
  <span class="why"><kbd>j</kbd>/<kbd>&rarr;</kbd> next, <kbd>k</kbd>/<kbd>&larr;</kbd> previous,
    <kbd>b</kbd> or <kbd>space</kbd> before/after, <kbd>[</kbd> <kbd>]</kbd> move the slider,
    <kbd>o</kbd> open the output</span>
</header>
<div id="notes"></div>
<main id="cards"></main>
<div id="empty" hidden>no photo matches these filters</div>
<div id="more"></div>
<script type="application/json" id="facefix-data">__DATA__</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("facefix-data").textContent);
  const PHOTOS = D.photos, THUMBS = D.thumbs, CHUNK = 40;
  const $ = (id) => document.getElementById(id);
  const cards = $("cards");
  let list = [], drawn = 0, current = -1;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function img(t, cls) {
    const i = el("img", cls);
    i.loading = "lazy"; i.decoding = "async"; i.alt = "";
    i.width = t[1]; i.height = t[2]; i.src = THUMBS + t[0];
    return i;
  }
  function slider(before, after) {
    const c = el("div", "cmp");
    c.style.aspectRatio = before[1] + " / " + before[2];
    c.appendChild(img(after, "after"));
    const b = el("div", "before");
    b.appendChild(img(before));
    c.appendChild(b);
    c.appendChild(el("div", "handle"));
    c.appendChild(el("span", "tag b", "before"));
    c.appendChild(el("span", "tag a", "after"));
    c.dataset.pos = "50";
    return c;
  }
  function setPos(c, pos) {
    pos = Math.max(0, Math.min(100, pos));
    c.dataset.pos = String(pos);
    c.querySelector(".before").style.clipPath = "inset(0 " + (100 - pos) + "% 0 0)";
    c.querySelector(".handle").style.left = pos + "%";
  }
  function fromPointer(c, ev) {
    const r = c.getBoundingClientRect();
    setPos(c, (ev.clientX - r.left) / r.width * 100);
  }
  cards.addEventListener("pointerdown", (ev) => {
    const c = ev.target.closest(".cmp");
    if (!c) return;
    ev.preventDefault();
    c.setPointerCapture(ev.pointerId);
    c.dataset.drag = "1";
    fromPointer(c, ev);
    focusCard(list.indexOf(Number(c.closest(".card").dataset.i)), false);
  });
  cards.addEventListener("pointermove", (ev) => {
    const c = ev.target.closest(".cmp");
    if (c && c.dataset.drag === "1") fromPointer(c, ev);
  });
  const stop = (ev) => { const c = ev.target.closest(".cmp"); if (c) delete c.dataset.drag; };
  cards.addEventListener("pointerup", stop);
  cards.addEventListener("pointercancel", stop);

  function card(i) {
    const p = PHOTOS[i];
    const c = el("article", "card");
    c.tabIndex = -1; c.dataset.i = String(i); c.dataset.status = p.status;
    const h = el("h2");
    h.appendChild(el("span", "badge s-" + p.status.replace(" ", "-"), p.status));
    h.appendChild(document.createTextNode(p.name));
    h.title = p.file;
    c.appendChild(h);
    const bits = [];
    if (p.why) bits.push(p.why);
    if (p.seconds) bits.push(p.seconds.toFixed(2) + " s");
    if (p.faces && p.faces.length) bits.push(p.faces.filter((f) => !f.skipped).length + " face(s) restored");
    if (bits.length) c.appendChild(el("div", "why", bits.join(" · ")));
    if (p.error) c.appendChild(el("div", "error", p.error));
    if (p.thumb_error) c.appendChild(el("div", "error", p.thumb_error));
    if (p.before && p.after) c.appendChild(slider(p.before, p.after));
    else if (p.before) {
      c.appendChild(img(p.before, "single"));
      if (p.status === "no face") c.appendChild(el("div", "why", "no face to restore: nothing was changed"));
    }
    if (p.faces === null && p.status === "skipped") {
      c.appendChild(el("div", "note", "done by an earlier run, and its faces are not in this data: the whole photo " +
                                      "only (the earlier run's report has them)"));
    } else if (p.faces === null && p.status !== "not read" && p.status !== "failed") {
      c.appendChild(el("div", "note", "faces not recorded for this photo: the whole photo only"));
    }
    if (p.faces && p.faces.length) {
      const fs = el("div", "faces");
      for (const f of p.faces) {
        const box = el("div", "face");
        if (f.before && f.after) box.appendChild(slider(f.before, f.after));
        const cap = el("div", "cap");
        cap.appendChild(el("b", null, f.person));
        let t = " · " + (f.restorer || "not restored");
        if (f.similarity !== null && f.similarity !== undefined) t += " · " + f.similarity.toFixed(2);
        if (f.skipped) t += " · " + f.skipped;
        cap.appendChild(document.createTextNode(t));
        box.appendChild(cap);
        fs.appendChild(box);
      }
      c.appendChild(fs);
    }
    const links = el("div", "links");
    if (p.output_href) { const a = el("a", "out", "output"); a.href = p.output_href; links.appendChild(a); }
    if (p.source_href) { const a = el("a", null, "original"); a.href = p.source_href; links.appendChild(a); }
    c.appendChild(links);
    return c;
  }

  function matches(p) {
    const s = $("f-status").value, who = $("f-person").value, name = $("f-name").value.toLowerCase();
    if (s === "problems" ? !(p.status === "failed" || p.status === "not read") : (s && p.status !== s)) return false;
    if (who && !(p.persons || []).includes(who)) return false;
    if (name && !p.file.toLowerCase().includes(name)) return false;
    return true;
  }
  function drawMore(upTo) {
    const end = Math.min(list.length, Math.max(drawn + CHUNK, upTo + 1));
    const frag = document.createDocumentFragment();
    for (; drawn < end; drawn++) frag.appendChild(card(list[drawn]));
    cards.appendChild(frag);
    $("shown").textContent = "showing " + drawn + " of " + list.length +
      (list.length !== PHOTOS.length ? " (filtered from " + PHOTOS.length + ")" : "");
  }
  function apply() {
    list = [];
    for (let i = 0; i < PHOTOS.length; i++) if (matches(PHOTOS[i])) list.push(i);
    cards.textContent = ""; drawn = 0; current = -1;
    $("empty").hidden = list.length > 0;
    drawMore(0);
  }
  function focusCard(k, scroll) {
    if (k < 0 || k >= list.length) return;
    if (k >= drawn) drawMore(k);
    const old = cards.querySelector(".card.current");
    if (old) old.classList.remove("current");
    current = k;
    const c = cards.children[k];
    c.classList.add("current");
    c.focus({ preventScroll: true });
    if (scroll !== false) c.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("input, select")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const c = current >= 0 ? cards.children[current] : null;
    const sliders = c ? c.querySelectorAll(".cmp") : [];
    switch (ev.key) {
      case "j": case "ArrowRight": focusCard(current + 1); break;
      case "k": case "ArrowLeft": focusCard(Math.max(0, current - 1)); break;
      case "b": case " ": {
        if (!sliders.length) return;
        const to = Number(sliders[0].dataset.pos) > 0 ? 0 : 100;
        sliders.forEach((s) => setPos(s, to)); break;
      }
      case "[": sliders.forEach((s) => setPos(s, Number(s.dataset.pos) - 10)); break;
      case "]": sliders.forEach((s) => setPos(s, Number(s.dataset.pos) + 10)); break;
      case "o": { const a = c && c.querySelector("a.out"); if (a) window.open(a.href, "_blank"); break; }
      default: return;
    }
    ev.preventDefault();
  });
  cards.addEventListener("focusin", (ev) => {
    const c = ev.target.closest(".card");
    if (c) current = Array.prototype.indexOf.call(cards.children, c);
  });

  const counts = {};
  const people = new Set();
  for (const p of PHOTOS) {
    counts[p.status] = (counts[p.status] || 0) + 1;
    for (const who of p.persons || []) people.add(who);
  }
  $("counts").textContent = PHOTOS.length + " photos" +
    Object.keys(counts).map((k) => " · " + counts[k] + " " + k).join("");
  for (const who of Array.from(people).sort()) {
    const o = el("option", null, who); o.value = who; $("f-person").appendChild(o);
  }
  for (const n of D.notes) $("notes").appendChild(el("p", null, n));
  for (const id of ["f-status", "f-person"]) $(id).addEventListener("change", apply);
  $("f-name").addEventListener("input", apply);
  const io = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && drawn < list.length) {
      drawMore(drawn);
      io.unobserve($("more")); io.observe($("more"));  // still in view (a tall screen): draw on
    }
  }, { rootMargin: "1200px" });
  io.observe($("more"));
  apply();
})();
</script>
</body>
</html>
"""
