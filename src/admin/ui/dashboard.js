// The dashboard: the last hour of process and traffic samples (1 s each,
// from /api/stats/history) drawn with uPlot, the leak-watchdog state and
// per-user traffic.

import { apiJson } from './api.js';
import { bytes, duration, el } from './format.js';

const HOUR = 3600;
const MIB = 1048576;

// One chart per entry: title, series (label, value from a sample), axis format.
const CHARTS = [
  // anon is the process's own memory (heap, stacks); file is mapped files
  // and shared memory, page cache the kernel can take back: a total alone
  // cannot tell a leak from the binary being paged in.
  {
    id: 'rss',
    title: 'RSS (MiB): anon = own memory, file = mapped files + shmem',
    series: [['total', (s) => s.rss_bytes / MIB], ['anon', (s) => s.rss_anon_bytes / MIB], ['file', (s) => s.rss_file_bytes / MIB]],
  },
  { id: 'cpu', title: 'CPU %', series: [['CPU', (s) => s.cpu_percent]] },
  { id: 'fds', title: 'Open fds', series: [['fds', (s) => s.open_fds], ['threads', (s) => s.threads]] },
  { id: 'conns', title: 'Connections by kind', series: [['http', (s) => s.http], ['tunnel', (s) => s.tunnel], ['relay', (s) => s.relay], ['upstream', (s) => s.upstream]] },
  { id: 'rps', title: 'Requests/s', series: [['req/s', (s) => s.requests_per_s]] },
  { id: 'bps', title: 'Bytes/s', series: [['up', (s) => s.bytes_up_per_s], ['down', (s) => s.bytes_down_per_s]], bytes: true },
];
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea'];

const state = { samples: [], lastT: 0, charts: [], timer: 0, tick: 0, busy: false };

function build() {
  const box = document.getElementById('charts');
  for (const c of CHARTS) {
    const div = el('div', { class: 'chart', id: `chart-${c.id}`, 'data-points': '0' }, el('h4', {}, c.title));
    box.append(div);
    const opts = {
      width: Math.max(360, div.clientWidth - 10),
      height: 170,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      series: [{}, ...c.series.map(([label], i) => ({ label, stroke: COLORS[i], width: 1.5, points: { show: false } }))],
      axes: [{}, { size: 60, values: c.bytes ? (u, v) => v.map((x) => bytes(Math.round(x))) : undefined }],
      scales: { x: { time: true } },
    };
    const plot = new window.uPlot(opts, [[], ...c.series.map(() => [])], div);
    state.charts.push({ c, div, plot });
  }
  new ResizeObserver(() => {
    for (const ch of state.charts) ch.plot.setSize({ width: Math.max(360, ch.div.clientWidth - 10), height: 170 });
  }).observe(box);
}

function redraw() {
  const s = state.samples;
  const xs = s.map((x) => x.t / 1000);
  for (const ch of state.charts) {
    ch.plot.setData([xs, ...ch.c.series.map(([, f]) => s.map(f))]);
    ch.div.dataset.points = String(s.length);
  }
}

async function pollHistory() {
  // The first call takes the hour; later ones only what is new.
  const gap = state.lastT ? Math.ceil((Date.now() - state.lastT) / 1000) + 2 : HOUR;
  const fresh = await apiJson(`/api/stats/history?last=${Math.min(HOUR, Math.max(2, gap))}`);
  const add = fresh.filter((x) => x.t > state.lastT);
  if (!add.length) return;
  state.samples.push(...add);
  state.lastT = add[add.length - 1].t;
  const cut = state.lastT - HOUR * 1000;
  let drop = 0;
  while (drop < state.samples.length && state.samples[drop].t < cut) drop++;
  if (drop) state.samples.splice(0, drop);
  redraw();
}

async function pollWatchdog() {
  const w = await apiJson('/api/watchdog');
  const bad = w.state !== 'ok';
  document.getElementById('watchdog').replaceChildren(
    el('span', { class: `badge ${bad ? 'bad' : 'good'}`, id: 'watchdog-state' }, `leak watchdog: ${w.state}`),
    el('span', { class: 'muted' }, ` growth warnings ${w.warnings.growth} · max-age warnings ${w.warnings.max_age}`),
  );
}

async function pollUsers() {
  const rows = await apiJson('/api/users');
  const now = Date.now();
  document.querySelector('#users-table tbody').replaceChildren(...rows.map((u) => el('tr', {},
    el('td', {}, u.user), el('td', {}, u.open_connections), el('td', {}, u.connections),
    el('td', {}, u.requests), el('td', {}, bytes(u.bytes_up)), el('td', {}, bytes(u.bytes_down)),
    el('td', {}, u.errors ?? 0), el('td', {}, u.last_seen_ms ? `${duration(Math.max(0, now - u.last_seen_ms))} ago` : ''))));
}

async function poll() {
  if (state.busy) return;
  state.busy = true;
  try {
    const jobs = [pollHistory()];
    if (state.tick++ % 2 === 0) jobs.push(pollWatchdog(), pollUsers());
    await Promise.all(jobs);
  } catch (_) {
    // reported in the status bar
  } finally {
    state.busy = false;
  }
}

export function showDashboard(active) {
  clearInterval(state.timer);
  if (!active) return;
  if (!state.charts.length) {
    if (!window.uPlot) { document.getElementById('charts').textContent = 'chart library failed to load'; return; }
    build();
  }
  state.tick = 0;
  poll();
  state.timer = setInterval(poll, 1000);
}
