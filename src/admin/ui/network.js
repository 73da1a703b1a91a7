// The network panel: records newest first in a virtualised list, pages
// fetched from the server by cursor as the view scrolls, new records
// streamed in over the live feed (Server-Sent Events) with the same
// filter; pause buffers (bounded), clear empties the view.

import { api, apiJson, showError, showInfo } from './api.js';
import { parseFilter } from './filter.js';
import { bytes, ms, clock, pathOf, el } from './format.js';
import { VList } from './vlist.js';
import { openDetail, closeDetail, detailOpen } from './detail.js';
import { tlsMarker } from './tls.js';

const ROW = 22;
const FIRST_PAGE = 200;
const PAGE = 1000;
// Live records kept while paused; past this the oldest are dropped (and
// counted), so a paused page cannot grow without bound.
const PAUSE_BUFFER = 5000;

const COLS = ['c-time', 'c-client', 'c-method', 'c-host', 'c-path', 'c-status', 'c-tls', 'c-type', 'c-size', 'c-dur'];

const state = {
  params: new URLSearchParams(),
  nextCursor: null,
  loading: false,
  generation: 0,
  paused: false,
  buffer: [],
  bufferDropped: 0,
  pending: [],
  selected: -1,
  source: null,
  topId: 0,
  // True while the gap between the first page and the live feed is read.
  filling: false,
};

let list;

function createRow() {
  const r = document.createElement('div');
  r.className = 'row';
  r.setAttribute('role', 'row');
  r._cells = COLS.map((c) => {
    const s = document.createElement('span');
    s.className = c;
    r.append(s);
    return s;
  });
  return r;
}

function shortType(ct) {
  if (!ct) return '';
  return ct.split(';')[0];
}

function render(r, rec, i) {
  const c = r._cells;
  if (!rec) {
    for (const s of c) s.textContent = '';
    c[4].textContent = '…';
    r.className = 'row';
    delete r.dataset.id;
    return;
  }
  r.dataset.id = rec.id;
  c[0].textContent = clock(rec.started_us);
  c[1].textContent = rec.user || rec.client;
  c[2].textContent = rec.method;
  c[3].textContent = rec.host;
  c[4].textContent = rec.kind === 'tunnel' ? rec.url : pathOf(rec.url);
  c[4].title = rec.url;
  c[5].textContent = rec.status ?? (rec.error ? 'ERR' : '');
  // Text only: the marker's title can hold a peer's words.
  const mark = tlsMarker(rec);
  c[6].textContent = mark ? mark.text : '';
  c[6].title = mark ? mark.title : '';
  c[6].className = mark && mark.bad ? 'c-tls bad' : 'c-tls';
  // WebSocket and event-stream rows: how many messages crossed.
  const type = rec.status === 101 ? 'websocket' : shortType(rec.content_type);
  c[7].textContent = rec.messages ? `${type} · ${rec.messages.seen.toLocaleString()} msg` : type;
  c[8].textContent = bytes(rec.resp_size);
  c[9].textContent = ms(rec.duration_ms);
  let cls = 'row';
  if (rec.error || rec.status >= 500) cls += ' err';
  if (i === state.selected) cls += ' sel';
  if (rec._live && Date.now() - rec._live < 1000) cls += ' live';
  r.className = cls;
}

function updateCount() {
  const n = list.items.length;
  const total = list.total;
  let text = total > n ? `${n.toLocaleString()} of ${total.toLocaleString()} loaded` : `${total.toLocaleString()} records`;
  if (state.paused) text += ` · paused, ${state.buffer.length} waiting` + (state.bufferDropped ? ` (${state.bufferDropped} dropped)` : '');
  document.getElementById('net-count').textContent = text;
}

// Loads the next (older) page, then again while the view still needs rows.
async function loadMore() {
  if (state.loading || state.nextCursor === null) return;
  state.loading = true;
  const gen = state.generation;
  const q = new URLSearchParams(state.params);
  q.set('limit', String(list.items.length ? PAGE : FIRST_PAGE));
  if (state.nextCursor) q.set('cursor', String(state.nextCursor));
  try {
    const page = await apiJson(`/api/records?${q}`);
    if (gen !== state.generation) return;
    // Newest first: a page only adds records older than the last one held
    // (live records may already hold the newest).
    const items = list.items;
    const oldest = items.length ? items[items.length - 1].id : Infinity;
    for (const rec of page.records) if (rec.id < oldest) items.push(rec);
    if (page.records.length) state.topId = Math.max(state.topId, page.records[0].id);
    state.nextCursor = page.next_cursor ?? null;
    if (state.nextCursor === null) list.setTotal(list.items.length);
    else list.setTotal(Math.max(list.total, list.items.length + 1));
    updateCount();
  } catch (_) {
    // Reported in the status bar; scrolling again retries.
    return;
  } finally {
    if (gen === state.generation) state.loading = false;
  }
  list.schedule();
}

// Restarts the list and the live feed for the current filter.
async function reload() {
  state.generation++;
  state.loading = false;
  state.nextCursor = 0;
  state.topId = 0;
  state.selected = -1;
  state.buffer = [];
  state.bufferDropped = 0;
  state.pending = [];
  state.filling = false;
  list.items = [];
  list.viewport.scrollTop = 0;
  list.setTotal(0);
  connectLive();
  const gen = state.generation;
  const counted = apiJson(`/api/records/count?${state.params}`).then((c) => {
    if (gen === state.generation) { list.setTotal(c.count); updateCount(); }
  }).catch(() => {});
  await loadMore();
  await counted;
  document.getElementById('har').href = `/api/har?${state.params}`;
}

function connectLive() {
  if (state.source) state.source.close();
  const es = new EventSource(`/api/records/live?${state.params}`, { withCredentials: true });
  state.source = es;
  es.addEventListener('record', (ev) => {
    let rec;
    try { rec = JSON.parse(ev.data); } catch (_) { return; }
    takeLive(rec);
  });
  es.addEventListener('lagged', (ev) => {
    showInfo(`live feed fell behind and skipped ${JSON.parse(ev.data).missed} records; change the filter or reload to see them`);
  });
  es.onerror = () => {
    if (state.source === es) showError('live feed disconnected; reconnecting…');
  };
  es.onopen = () => {
    const s = document.getElementById('status');
    if (s.textContent.startsWith('live feed')) showInfo('live feed connected');
    fillGap(es);
  };
}

// Prepends the live records gathered since the last frame.
// One record from the live feed (or the gap fill): buffered while paused,
// else shown on the next frame.
function takeLive(rec) {
  if (state.paused) {
    state.buffer.push(rec);
    if (state.buffer.length > PAUSE_BUFFER) { state.buffer.shift(); state.bufferDropped++; }
    updateCount();
    return;
  }
  state.pending.push(rec);
  if (state.pending.length === 1 && !state.filling) requestAnimationFrame(flushLive);
}

// Records committed after the first page was read but before the feed
// was subscribed reach neither: once the feed is open (the server has
// subscribed it), the newest page is read again and merged. Live rows
// wait meanwhile, so the merge never skips an id (addLive keeps only ids
// above the newest shown, and drops duplicates).
async function fillGap(es) {
  const gen = state.generation;
  state.filling = true;
  try {
    const q = new URLSearchParams(state.params);
    q.set('limit', String(FIRST_PAGE));
    const page = await apiJson(`/api/records?${q}`);
    if (gen === state.generation && state.source === es) {
      for (const rec of page.records.reverse()) takeLive(rec);
    }
  } catch (_) {
    // Reported in the status bar; the next reconnect fills again.
  } finally {
    if (state.source === es) {
      state.filling = false;
      if (state.pending.length) requestAnimationFrame(flushLive);
    }
  }
}

function flushLive() {
  if (state.filling) return;
  const batch = state.pending;
  state.pending = [];
  addLive(batch);
}

function addLive(batch) {
  const byId = new Map(batch.map((r) => [r.id, r]));
  const fresh = [...byId.values()].filter((r) => r.id > state.topId);
  if (!fresh.length) return;
  fresh.sort((a, b) => b.id - a.id);
  state.topId = fresh[0].id;
  const now = Date.now();
  for (const r of fresh) r._live = now;
  list.items.unshift(...fresh);
  const n = fresh.length;
  const atTop = list.viewport.scrollTop < ROW;
  list.setTotal(list.total + n);
  if (!atTop) list.viewport.scrollTop += n * ROW;
  if (state.selected >= 0) state.selected += n;
  updateCount();
  list.draw(true);
}

function select(i, open = false) {
  if (!list.items.length) return;
  i = Math.max(0, Math.min(i, list.items.length - 1));
  state.selected = i;
  list.reveal(i);
  list.draw(true);
  if (open || detailOpen()) openDetail(list.items[i]);
}

function togglePause() {
  state.paused = !state.paused;
  const b = document.getElementById('pause');
  b.textContent = state.paused ? 'Resume' : 'Pause';
  b.classList.toggle('on', state.paused);
  if (!state.paused) {
    const buffered = state.buffer;
    state.buffer = [];
    state.bufferDropped = 0;
    addLive(buffered);
  }
  updateCount();
}

function clearView() {
  state.generation++;
  state.nextCursor = null;
  state.selected = -1;
  state.buffer = [];
  list.items = [];
  list.viewport.scrollTop = 0;
  list.setTotal(0);
  list.draw(true);
  closeDetail();
  updateCount();
  showInfo('view cleared (the store keeps its records; change the filter to load them again)');
}

export function initNetwork() {
  const viewport = document.getElementById('viewport');
  list = new VList(viewport, document.getElementById('spacer'), {
    rowHeight: ROW,
    createRow,
    render,
    need: () => loadMore(),
  });
  const filter = document.getElementById('filter');
  let timer = 0;
  const apply = () => {
    const { params, error } = parseFilter(filter.value);
    if (error) { showError(error); filter.setCustomValidity(error); return; }
    filter.setCustomValidity('');
    state.params = params;
    showInfo(filter.value.trim() ? `filter: ${params}` : '');
    reload();
  };
  filter.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(apply, 250); });
  filter.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') { clearTimeout(timer); apply(); }
    if (ev.key === 'Escape' || ev.key === 'ArrowDown') { ev.preventDefault(); document.getElementById('list').focus(); }
  });
  document.getElementById('pause').addEventListener('click', togglePause);
  document.getElementById('clear').addEventListener('click', clearView);
  viewport.addEventListener('click', (ev) => {
    const r = ev.target.closest('.row');
    if (r && r._item) select(r._index, true);
  });
  const box = document.getElementById('list');
  box.addEventListener('keydown', (ev) => {
    const page = list.visibleRows();
    const moves = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1, PageDown: page, PageUp: -page };
    if (ev.key in moves) {
      ev.preventDefault();
      select(state.selected < 0 ? 0 : state.selected + moves[ev.key]);
    } else if (ev.key === 'Home') { ev.preventDefault(); select(0); }
    else if (ev.key === 'End') { ev.preventDefault(); select(list.items.length - 1); }
    else if (ev.key === 'Enter' && state.selected >= 0) { ev.preventDefault(); openDetail(list.items[state.selected]); }
  });
  reload();
}
