// The Messages view of a WebSocket or event-stream record: its messages
// oldest first in a virtualised list (direction, time, size, opcode,
// preview), pages fetched by cursor as the view scrolls, new ones
// streamed in over the record's live feed while the connection is open;
// a text filter over what is loaded and a direction filter on the
// server; the selected message shown whole (JSON pretty-printed, binary
// as hex, a close frame's code and reason).
//
// Every value from the wire goes in as text (textContent / el()): a
// message can hold markup.

import { apiJson, showError, showInfo } from './api.js';
import { bytes, clock, el } from './format.js';
import { VList } from './vlist.js';
import { hexLines, base64Bytes } from './body.js';

const ROW = 20;
const PAGE = 500;
// Messages kept in the view; the oldest loaded go first past it (the
// store keeps them all within the budget).
const MAX_LOADED = 50000;
const PREVIEW = 160;
// Live messages held while older pages load.
const PENDING_MAX = 10000;

const ARROW = { send: '↑', receive: '↓' };

function preview(m) {
  if (m.close) return `${m.close.code ?? ''} ${m.close.reason ?? ''}`.trim() || '(no code)';
  if (m.text != null) return m.text.slice(0, PREVIEW).replace(/\s+/g, ' ');
  if (m.base64 != null) {
    let b;
    try { b = base64Bytes(m.base64.slice(0, 64)); } catch (_) { return '(binary)'; }
    return Array.from(b.subarray(0, 24), (x) => x.toString(16).padStart(2, '0')).join(' ');
  }
  return m.size ? '(not captured)' : '(empty)';
}

function flags(m) {
  const f = [];
  if (m.truncated) f.push(`cut at ${bytes(m.captured)}`);
  if (m.compressed) f.push('inflated');
  if (m.dropped) f.push('dropped by rule: never delivered');
  if (m.problem) f.push(m.problem);
  return f.join(' · ');
}

// The whole message, for the pane under the list.
function fullView(m) {
  const head = el('div', { class: 'muted' }, [
    `#${m.seq}`, m.direction, m.opcode, `${bytes(m.size)}`, m.time, flags(m),
  ].filter(Boolean).join(' · '));
  const parts = [head];
  if (m.event && Object.keys(m.event).length) {
    parts.push(el('div', { class: 'muted msg-event' }, Object.entries(m.event).map(([k, v]) => `${k}: ${v}`).join(' · ')));
  }
  if (m.close) {
    parts.push(el('div', { class: 'msg-close' }, `close code ${m.close.code ?? '(none)'}`, m.close.reason ? ` · reason: ${m.close.reason}` : ''));
  } else if (m.text != null) {
    let text = m.text;
    const pre = el('pre', { class: 'body msg-body' });
    const t = text.trimStart();
    if (t.startsWith('{') || t.startsWith('[')) {
      try { text = JSON.stringify(JSON.parse(text), null, 2); pre.classList.add('json'); } catch (_) { /* text */ }
    }
    pre.textContent = text;
    parts.push(pre);
  } else if (m.base64 != null) {
    const pre = el('pre', { class: 'body hex msg-body' });
    try {
      const data = base64Bytes(m.base64);
      pre.textContent = hexLines(data, 0, data.length);
    } catch (e) { pre.textContent = `(cannot decode: ${e.message})`; }
    parts.push(pre);
  }
  return parts;
}

// One record's messages view; `close()` stops its live feed.
export class MessagesView {
  constructor(container, d) {
    this.id = d.id;
    this.open = d.close_reason == null;
    this.items = [];
    this.all = [];
    this.cursor = 0;
    this.done = false;
    this.loading = false;
    this.pending = [];
    this.pendingLost = false;
    this.source = null;
    this.selected = -1;
    this.text = '';
    this.direction = '';
    this.generation = 0;
    this.counts = el('span', { class: 'muted msg-counts' });
    const search = el('input', { type: 'search', placeholder: 'filter text', class: 'msg-filter' });
    search.addEventListener('input', () => { this.text = search.value.toLowerCase(); this.refilter(); });
    const dir = el('select', { class: 'msg-direction' },
      el('option', { value: '' }, 'both ways'), el('option', { value: 'send' }, '↑ sent'), el('option', { value: 'receive' }, '↓ received'));
    dir.addEventListener('change', () => { this.direction = dir.value; this.reload(); });
    this.state = el('span', { class: 'muted msg-state' });
    const viewport = el('div', { class: 'viewport' });
    const spacer = el('div', { class: 'spacer' });
    viewport.append(spacer);
    const listBox = el('div', { class: 'vlist msgs', tabindex: '0', role: 'grid', 'aria-label': 'messages' },
      el('div', { class: 'row head' }, el('span', { class: 'm-dir' }, ''), el('span', { class: 'm-time' }, 'time'),
        el('span', { class: 'm-op' }, 'opcode'), el('span', { class: 'm-size' }, 'size'), el('span', { class: 'm-text' }, 'data')),
      viewport);
    this.full = el('div', { class: 'msg-full' });
    container.append(el('div', { class: 'toolbar' }, search, dir, this.counts, this.state), listBox, this.full);
    this.list = new VList(viewport, spacer, {
      rowHeight: ROW,
      createRow: () => {
        const r = el('div', { class: 'row', role: 'row' });
        r._cells = ['m-dir', 'm-time', 'm-op', 'm-size', 'm-text'].map((c) => { const s = el('span', { class: c }); r.append(s); return s; });
        r.addEventListener('click', () => this.select(r._index));
        return r;
      },
      render: (r, m, i) => this.renderRow(r, m, i),
      need: () => this.loadMore(),
    });
    listBox.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowDown') { this.select(Math.min(this.items.length - 1, this.selected + 1)); e.preventDefault(); }
      if (e.key === 'ArrowUp') { this.select(Math.max(0, this.selected - 1)); e.preventDefault(); }
    });
    this.showCounts(d.messages);
    this.reload();
  }

  showCounts(c) {
    if (!c) { this.counts.textContent = 'no messages yet'; return; }
    let t = `${c.seen.toLocaleString()} messages · ${c.stored.toLocaleString()} stored · ${bytes(c.bytes)}`;
    if (c.unstored) t += ` · ${c.unstored}`;
    this.counts.textContent = t;
  }

  renderRow(r, m, i) {
    const c = r._cells;
    if (!m) { for (const s of c) s.textContent = ''; r.className = 'row'; return; }
    c[0].textContent = ARROW[m.direction] || '';
    c[0].title = m.direction;
    c[1].textContent = clock(m.time_us);
    c[2].textContent = m.dropped ? `${m.opcode} ✕` : m.opcode;
    c[2].title = m.dropped ? 'dropped by a rule: never delivered' : '';
    c[3].textContent = bytes(m.size);
    c[4].textContent = preview(m);
    r.dataset.seq = m.seq;
    r.className = `row ${m.direction}${m.opcode === 'close' ? ' close' : ''}${m.dropped ? ' dropped' : ''}${i === this.selected ? ' sel' : ''}`;
  }

  matches(m) {
    if (!this.text) return true;
    const hay = (m.text ?? '') + (m.close ? ` ${m.close.code} ${m.close.reason ?? ''}` : '') + (m.event ? ` ${JSON.stringify(m.event)}` : '');
    return hay.toLowerCase().includes(this.text);
  }

  refilter() {
    this.items = this.all.filter((m) => this.matches(m));
    this.list.items = this.items;
    this.selected = -1;
    this.full.replaceChildren();
    this.list.setTotal(this.items.length);
    this.list.draw(true);
  }

  add(rows) {
    for (const m of rows) {
      if (m.id <= this.cursor) continue;
      this.cursor = m.id;
      this.all.push(m);
      if (this.matches(m)) this.items.push(m);
    }
    if (this.all.length > MAX_LOADED) {
      const cut = this.all.length - MAX_LOADED;
      this.all.splice(0, cut);
      this.items = this.all.filter((m) => this.matches(m));
    }
    this.list.items = this.items;
    this.list.setTotal(this.items.length);
    this.list.draw(true);
  }

  query(extra) {
    const p = new URLSearchParams(extra);
    if (this.direction) p.set('direction', this.direction);
    return p;
  }

  async reload() {
    this.generation += 1;
    this.close();
    this.all = [];
    this.items = [];
    this.pending = [];
    this.pendingLost = false;
    this.cursor = 0;
    this.done = false;
    this.loading = false;
    this.selected = -1;
    this.full.replaceChildren();
    this.list.items = [];
    this.list.setTotal(0);
    // Live first, pages after: every message stored from the moment the
    // feed is open arrives on it, every earlier one is in a page; ids
    // already shown are skipped.
    if (this.open) this.connectLive();
    else this.loadMore();
  }

  async loadMore() {
    if (this.loading || this.done) return;
    this.loading = true;
    const gen = this.generation;
    try {
      const page = await apiJson(`/api/records/${this.id}/messages?${this.query({ limit: PAGE, ...(this.cursor ? { cursor: this.cursor } : {}) })}`);
      if (gen !== this.generation) return;
      this.showCounts(page.totals);
      this.add(page.messages);
      if (page.next_cursor == null) this.done = true;
    } catch (e) {
      showError(`record ${this.id}: messages: ${e.message}`);
      this.done = true;
    } finally {
      if (gen === this.generation) this.loading = false;
    }
    if (gen === this.generation && this.done) this.flushPending();
  }

  // Live messages wait while older pages are still to load (adding them
  // first would move the cursor past those pages).
  flushPending() {
    if (this.pendingLost) {
      // More arrived than the buffer holds: they are in the store.
      this.pendingLost = false;
      this.pending = [];
      this.done = false;
      this.loadMore();
      return;
    }
    const rows = this.pending;
    this.pending = [];
    this.add(rows);
  }

  live(m) {
    if (m.opcode === 'close') this.state.textContent = `closed ${m.close?.code ?? ''}`.trim();
    if (this.done && !this.loading) { this.add([m]); return; }
    if (this.pending.length < PENDING_MAX) this.pending.push(m);
    else this.pendingLost = true;
  }

  connectLive() {
    const gen = this.generation;
    const es = new EventSource(`/api/records/${this.id}/messages/live?${this.query()}`, { withCredentials: true });
    this.source = es;
    es.addEventListener('message', (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      if (gen === this.generation) this.live(m);
    });
    es.addEventListener('lagged', () => {
      showInfo(`messages of record ${this.id}: the live feed fell behind; reloading`);
      this.reload();
    });
    es.onerror = () => { if (this.source === es) this.state.textContent = '○ reconnecting'; };
    // On every (re)connect: what was stored before it is read from the
    // store.
    es.onopen = () => {
      if (this.source !== es) return;
      this.state.textContent = '● live';
      this.done = false;
      this.loadMore();
    };
  }

  select(i) {
    if (i < 0 || i >= this.items.length) return;
    this.selected = i;
    this.list.reveal(i);
    this.list.draw(true);
    this.full.replaceChildren(...fullView(this.items[i]));
  }

  close() {
    if (this.source) { this.source.close(); this.source = null; }
  }
}
