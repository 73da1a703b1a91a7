// The rules editor: the rule file in a textarea with line numbers,
// checked by the server as you type (errors shown at their line), saved
// with a hot reload, and a "which rules match this URL" tester.

import { api, apiJson, showError, showInfo } from './api.js';
import { el } from './format.js';

const state = { loaded: false, badLines: new Set(), timer: 0, checkSeq: 0 };

const text = () => document.getElementById('rules-text');

function drawGutter() {
  const n = text().value.split('\n').length;
  const g = document.getElementById('gutter');
  const parts = [];
  for (let i = 1; i <= n; i++) {
    parts.push(state.badLines.has(i) ? `<span class="bad" data-line="${i}">${i}</span>` : `<span data-line="${i}">${i}</span>\n`);
  }
  // A bad line's span is display:block, so it brings its own line break.
  g.innerHTML = parts.join('');
  g.scrollTop = text().scrollTop;
}

function showErrors(errors) {
  state.badLines = new Set(errors.map((e) => e.line));
  const list = document.getElementById('rules-errors');
  list.replaceChildren(...errors.map((e) => el('li', { 'data-line': e.line, onclick: () => goTo(e.line, e.column) }, `line ${e.line}:${e.column}: ${e.message}`)));
  drawGutter();
}

function goTo(line, column = 1) {
  const t = text();
  const lines = t.value.split('\n');
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  pos += Math.max(0, column - 1);
  t.focus();
  t.setSelectionRange(pos, pos);
  t.scrollTop = Math.max(0, (line - 5) * 18);
}

// Asks the server to compile the text without installing it.
async function validate() {
  const seq = ++state.checkSeq;
  const r = await apiJson('/api/rules/validate', { method: 'POST', body: text().value });
  if (seq !== state.checkSeq) return r;
  showErrors(r.errors);
  document.getElementById('rules-state').textContent = r.valid
    ? `valid: ${r.rules} rule${r.rules === 1 ? '' : 's'}`
    : `${r.errors.length} error${r.errors.length === 1 ? '' : 's'}`;
  return r;
}

async function save() {
  const check = await validate().catch(() => null);
  if (!check) return;
  if (!check.valid) { showError('the rules have errors; nothing was saved'); return; }
  try {
    const r = await api('/api/rules', { method: 'PUT', body: text().value, quiet: true });
    const v = await r.json();
    showErrors([]);
    document.getElementById('rules-state').textContent = `saved: generation ${v.generation}, ${v.rules} rules${v.path ? ` in ${v.path}` : ''}`;
    showInfo('rules saved and live');
  } catch (e) {
    if (e.status === 400 && e.response) {
      const body = await e.response.json().catch(() => ({}));
      showErrors(body.errors || []);
    }
    showError(e.message);
  }
}

async function load() {
  try {
    const r = await apiJson('/api/rules');
    text().value = r.text;
    state.loaded = true;
    document.getElementById('rules-state').textContent = `generation ${r.generation}, ${r.rules} rules${r.path ? ` from ${r.path}` : ' (not from a file: saved rules last until restart)'}`;
    showErrors([]);
  } catch (_) { /* reported */ }
}

async function runTest() {
  const url = document.getElementById('test-url').value.trim();
  const method = document.getElementById('test-method').value;
  const out = document.getElementById('test-result');
  if (!url) { showError('give a URL to test'); return; }
  try {
    const r = await apiJson(`/api/rules/test?${new URLSearchParams({ url, method })}`);
    const lines = [`matched: ${r.matched.length ? r.matched.join(', ') : 'no rule'}`];
    for (const a of r.applied) lines.push(`  ${typeof a === 'string' ? a : JSON.stringify(a)}`);
    if (r.answer) lines.push(`answered by sluice: ${r.answer.kind} (${r.answer.rule})${r.answer.status ? ` status ${r.answer.status}` : ''}`);
    out.textContent = lines.join('\n');
  } catch (e) {
    out.textContent = e.message;
  }
}

export function initRules() {
  const t = text();
  t.addEventListener('input', () => {
    drawGutter();
    clearTimeout(state.timer);
    state.timer = setTimeout(() => validate().catch(() => {}), 400);
  });
  t.addEventListener('scroll', () => { document.getElementById('gutter').scrollTop = t.scrollTop; });
  t.addEventListener('keydown', (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && ev.key === 's') { ev.preventDefault(); save(); }
  });
  document.getElementById('rules-validate').addEventListener('click', () => validate().catch(() => {}));
  document.getElementById('rules-save').addEventListener('click', save);
  document.getElementById('rules-revert').addEventListener('click', load);
  document.getElementById('test-run').addEventListener('click', runTest);
  document.getElementById('test-url').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') runTest(); });
}

export function showRules(active) {
  if (active && !state.loaded) load();
}
