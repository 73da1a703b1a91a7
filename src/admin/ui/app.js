// Entry point: tabs (also reachable as #network, #connections,
// #dashboard, #rules), global keys, and the health line.

import { apiJson } from './api.js';
import { duration } from './format.js';
import { initNetwork } from './network.js';
import { closeDetail } from './detail.js';
import { initConnections, showConnections } from './connections.js';
import { showDashboard } from './dashboard.js';
import { initRules, showRules } from './rules.js';

// Opened as `/?token=...` (the address printed at start) with a session
// already open: the token leaves the address bar at once.
{
  const u = new URL(location.href);
  if (u.searchParams.has('token')) {
    u.searchParams.delete('token');
    history.replaceState(null, '', u.pathname + u.search + u.hash);
  }
}

const TABS = ['network', 'connections', 'dashboard', 'rules'];
let active = '';

function show(tab) {
  if (!TABS.includes(tab)) tab = 'network';
  if (tab === active) return;
  active = tab;
  for (const t of TABS) {
    document.getElementById(`panel-${t}`).classList.toggle('active', t === tab);
    document.querySelector(`#tabs [data-tab=${t}]`).classList.toggle('active', t === tab);
  }
  showConnections(tab === 'connections');
  showDashboard(tab === 'dashboard');
  showRules(tab === 'rules');
  if (location.hash !== `#${tab}`) history.replaceState(null, '', `#${tab}`);
}

async function health() {
  try {
    const h = await apiJson('/api/health', { quiet: true });
    document.getElementById('health').textContent = `${h.status} · up ${duration(h.uptime_s * 1000)} · ${h.connections} connections · v${h.version}`;
  } catch (e) {
    document.getElementById('health').textContent = `admin server unreachable: ${e.message}`;
  }
}

function typing(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement;
}

document.getElementById('tabs').addEventListener('click', (ev) => {
  const t = ev.target.dataset.tab;
  if (t) show(t);
});
window.addEventListener('hashchange', () => show(location.hash.slice(1)));
document.addEventListener('keydown', (ev) => {
  if (ev.key === '/' && !typing(ev.target) && active === 'network') {
    ev.preventDefault();
    document.getElementById('filter').focus();
  } else if (ev.key === 'Escape' && active === 'network' && !typing(ev.target)) {
    closeDetail();
    document.getElementById('list').focus();
  }
});

initNetwork();
initConnections();
initRules();
show(location.hash.slice(1) || 'network');
health();
setInterval(health, 5000);
