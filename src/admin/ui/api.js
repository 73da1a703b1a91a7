// Admin API access: every call reports failures in the status bar, and a
// 401 sends the page back to the token prompt.

const statusBar = () => document.getElementById('status');

export function showError(message) {
  const s = statusBar();
  s.textContent = message;
  s.className = 'error';
}

export function showInfo(message) {
  const s = statusBar();
  s.textContent = message;
  s.className = '';
}

// Fetches an admin route; throws (after reporting) on network errors and
// non-2xx answers. `opts.quiet` skips the status bar (the caller reports).
export async function api(path, opts = {}) {
  const init = { credentials: 'same-origin', ...opts };
  init.headers = { 'x-sluice-ui': '1', ...(opts.headers || {}) };
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    const msg = `cannot reach the admin server (${path}): ${e.message}`;
    if (!opts.quiet) showError(msg);
    throw new Error(msg);
  }
  if (r.status === 401) {
    location.reload();
    throw new Error('the admin token is required');
  }
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.clone().json()).error || detail; } catch (_) { /* not JSON */ }
    const err = new Error(`${path.split('?')[0]}: ${r.status} ${detail}`);
    err.status = r.status;
    err.response = r;
    if (!opts.quiet) showError(err.message);
    throw err;
  }
  return r;
}

export async function apiJson(path, opts) {
  const r = await api(path, opts);
  return r.status === 204 ? null : r.json();
}
