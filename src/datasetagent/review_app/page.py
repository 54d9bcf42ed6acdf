"""The review page: HTML, script and style, served by ``app.py`` (vanilla JS, no build step,
nothing from other origins). ``{{TOKEN}}`` and ``{{RUN}}`` are filled in, HTML-escaped, per
request."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="csrf-token" content="{{TOKEN}}">
<title>datasetagent review</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>Review <span id="run">{{RUN}}</span></h1>
  <div id="progress" aria-live="polite"></div>
</header>
<form id="filters" autocomplete="off">
  <label>class <select id="f-label"><option value="">all</option></select></label>
  <label>reason <input id="f-reason" size="10"></label>
  <label>source <input id="f-source" size="8"></label>
  <label>confidence <input id="f-min" size="4" placeholder="min"> -
    <input id="f-max" size="4" placeholder="max"></label>
  <label>sort <select id="f-sort">
    <option value="">queue order</option><option value="confidence">confidence</option>
    <option value="similar">similar to current</option></select></label>
  <label>bulk accept at &ge; <input id="bulk-min" size="4" value="0.9"></label>
  <button type="button" id="bulk">bulk accept (b)</button>
</form>
<main>
  <section id="viewer">
    <div id="stage"><img id="image" alt=""><div id="boxes"></div></div>
    <div id="info"></div>
    <div id="classes"></div>
  </section>
  <ol id="queue"></ol>
</main>
<p id="status" role="status"></p>
<footer>keys: <b>a</b> accept &middot; <b>r</b> reject &middot; <b>1-9</b> relabel to class N
&middot; <b>j</b>/<b>&darr;</b>/<b>&rarr;</b> next &middot; <b>k</b>/<b>&uarr;</b>/<b>&larr;</b>
previous &middot; <b>u</b> undo &middot; <b>b</b> bulk accept the filtered group &middot;
<b>s</b> sort by similarity &middot; detection: click a box (or <b>n</b>) to select,
<b>d</b> delete it, <b>shift+1-9</b> relabel it</footer>
</body>
</html>
"""

APP_JS = r"""'use strict';
const token = document.querySelector('meta[name="csrf-token"]').content;
const state = {items: [], classes: [], pos: 0, box: -1, busy: false};
const $ = (id) => document.getElementById(id);

async function api(method, url, body) {
  const opts = {method, headers: {}};
  if (method === 'POST') {
    opts.headers['X-CSRF-Token'] = token;
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body || {});
  }
  const res = await fetch(url, opts);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function filter() {
  return {label: $('f-label').value, reason: $('f-reason').value, source: $('f-source').value,
          min: $('f-min').value, max: $('f-max').value};
}

function say(text) { $('status').textContent = text; }

async function load(keepId) {
  const params = new URLSearchParams(filter());
  const sort = $('f-sort').value;
  if (sort) params.set('sort', sort);
  const current = state.items[state.pos];
  if (sort === 'similar' && current) params.set('to', current.id);
  const data = await api('GET', '/api/queue?' + params.toString());
  state.items = data.items;
  if (!state.classes.length) {
    state.classes = data.classes;
    const sel = $('f-label');
    data.classes.forEach((c) => sel.add(new Option(c, c)));
  }
  const at = keepId ? state.items.findIndex((i) => i.id === keepId) : -1;
  state.pos = at >= 0 ? at : Math.min(state.pos, Math.max(0, state.items.length - 1));
  render();
  await progress();
}

async function progress() {
  const p = await api('GET', '/api/progress');
  const box = $('progress');
  box.replaceChildren();
  p.classes.forEach((c) => {
    const row = document.createElement('div');
    row.className = 'bar' + (c.accepted >= c.target ? ' met' : '');
    row.dataset.class = c.name;
    const fill = document.createElement('span');
    fill.style.width = Math.min(100, 100 * c.accepted / Math.max(1, c.target)) + '%';
    const text = document.createElement('em');
    text.textContent = `${c.name}: ${c.accepted}/${c.target} (${c.review} held)`;
    row.append(fill, text);
    box.append(row);
  });
  const done = document.createElement('div');
  done.id = 'decided';
  done.textContent = `${p.decisions} decision(s) this session, ${state.items.length} left`;
  box.append(done);
}

function render() {
  const list = $('queue');
  list.replaceChildren();
  state.items.forEach((item, k) => {
    const li = document.createElement('li');
    li.dataset.id = item.id;
    li.className = item.kind + (k === state.pos ? ' current' : '');
    const conf = item.confidence === null ? '-' : item.confidence.toFixed(2);
    li.textContent = `${item.kind === 'audit' ? 'audit ' : ''}${item.label ?? '?'} ${conf}`;
    li.addEventListener('click', () => { state.pos = k; state.box = -1; render(); });
    list.append(li);
  });
  const item = state.items[state.pos];
  const img = $('image');
  $('boxes').replaceChildren();
  if (!item) {
    img.removeAttribute('src');
    $('info').textContent = 'Nothing left to review with these filters.';
    $('classes').replaceChildren();
    return;
  }
  if (img.getAttribute('src') !== item.image) img.src = item.image;
  img.dataset.id = item.id;
  const conf = item.confidence === null ? '-' : item.confidence.toFixed(3);
  $('info').textContent = `${state.pos + 1}/${state.items.length} · ${item.kind} · ` +
    `${item.label ?? 'no class'} (${conf}) · ${item.reason} · ${item.source}: ${item.location}`;
  const classes = $('classes');
  classes.replaceChildren();
  state.classes.forEach((c, k) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = `${k + 1} ${c}`;
    if (c === item.label) b.className = 'shown';
    b.addEventListener('click', () => decide('relabel', c));
    classes.append(b);
  });
  drawBoxes(item);
  list.children[state.pos]?.scrollIntoView({block: 'nearest'});
}

function drawBoxes(item) {
  if (!item.objects) return;
  const img = $('image');
  const place = () => {
    const layer = $('boxes');
    layer.replaceChildren();
    const sx = img.clientWidth / item.width, sy = img.clientHeight / item.height;
    item.objects.forEach((o, k) => {
      const d = document.createElement('div');
      d.className = 'box' + (k === state.box ? ' selected' : '');
      d.style.left = o.box[0] * sx + 'px';
      d.style.top = o.box[1] * sy + 'px';
      d.style.width = o.box[2] * sx + 'px';
      d.style.height = o.box[3] * sy + 'px';
      d.textContent = o.label;
      d.addEventListener('click', () => { state.box = k; drawBoxes(item); });
      layer.append(d);
    });
  };
  if (img.complete && img.naturalWidth) place(); else img.onload = place;
}

async function act(call) {
  if (state.busy) return;
  state.busy = true;
  try { await call(); } catch (e) { say(e.message); } finally { state.busy = false; }
}

function decide(decision, label) {
  const item = state.items[state.pos];
  if (!item) return;
  act(async () => {
    const body = {id: item.id, decision};
    if (label) body.label = label;
    await api('POST', '/api/decisions', body);
    state.box = -1;
    const next = state.items[state.pos + 1];
    await load(next ? next.id : null);
    say(`${decision}${label ? ' ' + label : ''}: ${item.id.slice(0, 12)}`);
  });
}

function editBox(label) {
  const item = state.items[state.pos];
  if (!item || !item.objects || state.box < 0) return;
  act(async () => {
    const body = {id: item.id, box: state.box};
    if (label) body.label = label;
    const res = await api('POST', '/api/boxes', body);
    item.objects = res.objects;
    state.box = Math.min(state.box, item.objects.length - 1);
    say(label ? `box relabelled ${label}` : 'box deleted');
    render();
  });
}

function bulk() {
  const min = parseFloat($('bulk-min').value);
  if (Number.isNaN(min)) { say('set the bulk-accept confidence first'); return; }
  act(async () => {
    const res = await api('POST', '/api/bulk', {min_confidence: min, filter: filter()});
    await load(null);
    say(`bulk accepted ${res.accepted} sample(s) at confidence >= ${min}`);
  });
}

function undo() {
  act(async () => {
    const res = await api('POST', '/api/undo', {});
    await load(res.undone[0]);
    say(`undone: ${res.undone.length} sample(s)`);
  });
}

function move(step) {
  if (!state.items.length) return;
  state.pos = Math.max(0, Math.min(state.items.length - 1, state.pos + step));
  state.box = -1;
  render();
}

document.addEventListener('keydown', (e) => {
  if (e.target.closest('input, select') || e.ctrlKey || e.metaKey || e.altKey) return;
  const digit = /^Digit([1-9])$/.exec(e.code);
  if (digit) {
    const cls = state.classes[Number(digit[1]) - 1];
    if (cls) { e.preventDefault(); if (e.shiftKey) editBox(cls); else decide('relabel', cls); }
    return;
  }
  const keys = {
    a: () => decide('accept'), r: () => decide('reject'), u: undo, b: bulk,
    j: () => move(1), ArrowDown: () => move(1), ArrowRight: () => move(1),
    k: () => move(-1), ArrowUp: () => move(-1), ArrowLeft: () => move(-1),
    d: () => editBox(null),
    n: () => {
      const item = state.items[state.pos];
      if (item && item.objects && item.objects.length) {
        state.box = (state.box + 1) % item.objects.length; drawBoxes(item);
      }
    },
    s: () => { $('f-sort').value = 'similar'; act(() => load(state.items[state.pos]?.id)); },
  };
  const run = keys[e.key];
  if (run) { e.preventDefault(); run(); }
});

$('filters').addEventListener('change', (e) => {
  if (e.target.id !== 'bulk-min') act(() => load(null));
});
$('filters').addEventListener('submit', (e) => e.preventDefault());
$('bulk').addEventListener('click', bulk);
window.addEventListener('resize', () => render());
load(null).then(() => { document.body.dataset.ready = '1'; }, (e) => say(e.message));
"""

APP_CSS = """body { font: 14px system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { display: flex; gap: 2em; align-items: flex-start; padding: .5em 1em; background: #fff;
  border-bottom: 1px solid #ddd; }
h1 { font-size: 1.1em; margin: .3em 0; } #run { color: #666; font-weight: normal; }
#progress { display: flex; flex-wrap: wrap; gap: .4em; }
.bar { position: relative; width: 13em; height: 1.4em; background: #eee; border-radius: 3px; }
.bar span { position: absolute; inset: 0 auto 0 0; background: #f0b34a; border-radius: 3px; }
.bar.met span { background: #5cb85c; }
.bar em { position: relative; font-style: normal; padding: 0 .4em; line-height: 1.4em; }
#decided { line-height: 1.4em; color: #555; }
#filters { display: flex; flex-wrap: wrap; gap: 1em; padding: .5em 1em; }
main { display: flex; gap: 1em; padding: 0 1em; }
#viewer { flex: 1; }
#stage { position: relative; display: inline-block; }
#image { display: block; max-width: 70vw; max-height: 65vh; min-width: 256px;
  image-rendering: pixelated; background: #fff; border: 1px solid #ccc; }
#boxes { position: absolute; inset: 0; }
.box { position: absolute; border: 2px solid #e33; color: #fff; font-size: 11px;
  background: rgba(230, 50, 50, .12); cursor: pointer; box-sizing: border-box; }
.box.selected { border-color: #2a7de1; background: rgba(42, 125, 225, .2); }
#info { margin: .5em 0; }
#classes button { margin: 0 .3em .3em 0; } #classes button.shown { font-weight: bold; }
#queue { width: 16em; max-height: 75vh; overflow: auto; margin: 0; padding-left: 2.5em; }
#queue li { cursor: pointer; padding: 1px 3px; } #queue li.audit { color: #2a5db0; }
#queue li.current { background: #ffe58a; }
#status { padding: 0 1em; min-height: 1.2em; color: #333; }
footer { padding: .5em 1em; color: #555; border-top: 1px solid #ddd; }
"""
