// The connections panel: the live inventory refreshed every second,
// sortable and filterable, a button to close one, and the kernel
// cross-check (TCP states; orphans and timer-less sockets in red when
// non-zero).

import { api, apiJson, showInfo } from './api.js';
import { bytes, duration, el } from './format.js';

// Rows drawn at most; a filter narrows the rest.
const MAX_ROWS = 500;

const state = { rows: [], sort: 'id', desc: false, timer: 0, busy: false };

function key(r, k) {
  if (k === 'deadline') return r.next_deadline ? r.next_deadline.in_ms : Infinity;
  const v = r[k];
  return v == null ? '' : v;
}

function draw() {
  const q = document.getElementById('conn-filter').value.trim().toLowerCase();
  let rows = state.rows;
  if (q) {
    rows = rows.filter((r) => [r.kind, r.client, r.upstream, r.state, r.user, String(r.id)]
      .some((v) => v && String(v).toLowerCase().includes(q)));
  }
  const dir = state.desc ? -1 : 1;
  const k = state.sort;
  rows = rows.slice().sort((a, b) => {
    const x = key(a, k);
    const y = key(b, k);
    return (x < y ? -1 : x > y ? 1 : 0) * dir;
  });
  const body = document.querySelector('#conn-table tbody');
  const shown = rows.slice(0, MAX_ROWS);
  body.replaceChildren(...shown.map((r) => el('tr', { 'data-id': r.id },
    el('td', {}, r.id), el('td', {}, r.kind), el('td', {}, r.client ?? ''),
    el('td', {}, r.upstream ?? ''), el('td', {}, r.state), el('td', {}, duration(r.age_ms)),
    el('td', {}, duration(r.idle_ms)), el('td', {}, bytes(r.bytes_up)), el('td', {}, bytes(r.bytes_down)),
    el('td', {}, r.next_deadline ? `${r.next_deadline.reason} in ${duration(r.next_deadline.in_ms)}` : ''),
    el('td', {}, el('button', { class: 'kill', 'data-id': r.id, title: 'Close both legs' }, 'Close')))));
  if (rows.length > MAX_ROWS) {
    body.append(el('tr', {}, el('td', { colspan: 11, class: 'muted' }, `${rows.length - MAX_ROWS} more: filter to narrow`)));
  }
}

function drawSockets(s) {
  const box = document.getElementById('tcp-states');
  const badges = Object.entries(s.by_state || {}).map(([k, v]) => el('span', { class: 'badge' }, `${k} ${v}`));
  const orphans = s.orphan_count ?? 0;
  const timerless = s.without_timer ?? 0;
  badges.push(el('span', { class: `badge ${orphans ? 'bad' : 'good'}`, id: 'orphans' }, `orphans ${orphans}`));
  badges.push(el('span', { class: `badge ${timerless ? 'bad' : 'good'}`, id: 'timerless' }, `timer-less ${timerless}`));
  box.replaceChildren(...badges);
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const [conns, sockets] = await Promise.all([
      apiJson('/api/connections'),
      apiJson('/api/sockets?top=5'),
    ]);
    state.rows = conns.connections;
    draw();
    drawSockets(sockets);
  } catch (_) {
    // reported in the status bar
  } finally {
    state.busy = false;
  }
}

export function initConnections() {
  document.getElementById('conn-filter').addEventListener('input', draw);
  document.querySelector('#conn-table thead').addEventListener('click', (ev) => {
    const k = ev.target.dataset.sort;
    if (!k) return;
    state.desc = state.sort === k ? !state.desc : false;
    state.sort = k;
    draw();
  });
  document.querySelector('#conn-table tbody').addEventListener('click', async (ev) => {
    const b = ev.target.closest('button.kill');
    if (!b) return;
    b.disabled = true;
    try {
      await api(`/api/connections/${b.dataset.id}`, { method: 'DELETE' });
      showInfo(`connection ${b.dataset.id} closed`);
    } catch (_) {
      b.disabled = false;
    }
    refresh();
  });
}

export function showConnections(active) {
  clearInterval(state.timer);
  if (active) {
    refresh();
    state.timer = setInterval(refresh, 1000);
  }
}
