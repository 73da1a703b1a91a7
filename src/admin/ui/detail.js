// The detail pane of one record: summary, timing waterfall, rules that
// touched it, TLS (both legs of an intercepted exchange, or what became
// of a tunnel), "copy as curl", request and response headers and bodies,
// and the messages of a WebSocket or event stream (live while it is open).

import { apiJson, showError, showInfo } from './api.js';
import { bytes, ms, el } from './format.js';
import { renderBody } from './body.js';
import { tlsRows } from './tls.js';
import { MessagesView } from './messages.js';

let current = 0;
// The open record's messages view: its live feed ends with the pane.
let messages = null;

function dropMessages() {
  if (messages) messages.close();
  messages = null;
}

// A record whose exchange went on as messages: an upgrade that was taken
// (101) or an event stream.
function carriesMessages(d) {
  return d.messages != null || d.status === 101 || /^text\/event-stream/i.test(d.content_type || '');
}

export function detailOpen() {
  return !document.getElementById('detail').hidden;
}

export function closeDetail() {
  const pane = document.getElementById('detail');
  pane.hidden = true;
  pane.replaceChildren();
  current = 0;
  dropMessages();
}

function quote(s) {
  return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

// A curl command that repeats the request (headers as sent by the client,
// minus the framing ones curl sets itself).
export function curlOf(d) {
  const parts = ['curl'];
  if (d.method !== 'GET') parts.push('-X', d.method);
  parts.push(quote(d.url));
  for (const [k, v] of d.request.headers) {
    if (/^(content-length|host|transfer-encoding|connection|proxy-connection|via)$/i.test(k)) continue;
    parts.push('-H', quote(`${k}: ${v}`));
  }
  const b = d.request.body;
  if (b && b.text) parts.push('--data-binary', quote(b.text));
  else if (b && b.base64) parts.push('--data-binary', `@${d.id}-request.bin`);
  return parts.join(' ');
}

function headersTable(rows) {
  if (!rows.length) return el('div', { class: 'muted' }, '(none)');
  return el('table', { class: 'headers' }, rows.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v))));
}

const PHASES = [['blocked', 'queued'], ['dns', 'DNS'], ['connect', 'connect'], ['ssl', 'TLS'], ['send', 'send'], ['wait', 'wait'], ['receive', 'receive']];

function waterfall(t) {
  const total = PHASES.reduce((s, [k]) => s + Math.max(0, t[k] ?? -1), 0) || 1;
  const grid = el('div', { class: 'waterfall' });
  let at = 0;
  for (const [k, label] of PHASES) {
    const v = t[k];
    const bar = el('div', { class: 'bar' });
    if (v != null && v >= 0) {
      const i = el('i');
      i.style.left = `${(at / total) * 100}%`;
      i.style.width = `${(v / total) * 100}%`;
      bar.append(i);
      at += v;
    }
    grid.append(el('span', {}, label), bar, el('span', { class: 'ms' }, v != null && v >= 0 ? ms(v) : '–'));
  }
  return grid;
}

function rulesList(rules) {
  if (!rules || !rules.length) return el('div', { class: 'muted' }, 'no rule touched this exchange');
  return el('ul', { class: 'rules' }, rules.map((r) => el('li', {}, `${r.rule ?? ''} ${r.kind ?? ''}: ${typeof r.action === 'string' ? r.action : JSON.stringify(r.action ?? r)}`)));
}

// TLS facts come from peers (a certificate subject can hold markup):
// each value goes in as a text node through el().
function tlsTable(t) {
  const rows = tlsRows(t);
  if (!rows.length) return null;
  return el('table', { class: 'headers', id: 'tls' }, rows.map(([k, v, bad]) =>
    el('tr', {}, el('td', {}, k), el('td', bad ? { class: 'bad' } : {}, v))));
}

function section(title, ...content) {
  return el('details', { open: '' }, el('summary', {}, el('strong', {}, title)), ...content);
}

export async function openDetail(summary) {
  if (!summary) return;
  const pane = document.getElementById('detail');
  pane.hidden = false;
  if (current === summary.id) return;
  current = summary.id;
  dropMessages();
  pane.replaceChildren(el('div', { class: 'muted' }, `loading record ${summary.id}…`));
  let d;
  try {
    d = await apiJson(`/api/records/${summary.id}`);
  } catch (e) {
    if (current === summary.id) pane.replaceChildren(el('div', { class: 'muted' }, e.message));
    return;
  }
  if (current !== summary.id) return;
  const copy = el('button', { id: 'copy-curl' }, 'Copy as curl');
  const curlOut = el('pre', { class: 'result', id: 'curl-out', hidden: '' });
  copy.addEventListener('click', async () => {
    const cmd = curlOf(d);
    curlOut.textContent = cmd;
    curlOut.hidden = false;
    try {
      await navigator.clipboard.writeText(cmd);
      showInfo('curl command copied');
    } catch (_) {
      showInfo('clipboard not available: the command is shown in the pane');
    }
  });
  const close = el('button', { title: 'Close (Esc)', onclick: closeDetail }, '×');
  const reqBody = el('div');
  const respBody = el('div');
  const msgs = carriesMessages(d) ? el('div', { id: 'messages' }) : null;
  pane.replaceChildren(...[
    el('div', { class: 'toolbar' }, el('strong', {}, `#${d.id}`), copy, close),
    el('div', { class: 'url' }, el('strong', {}, d.method), ' ', d.url),
    el('div', { class: 'muted' }, [
      `status ${d.status ?? '—'}`, `client ${d.client}`, d.user ? `user ${d.user}` : null,
      d.upstream_addr ? `upstream ${d.upstream_addr}` : null, `${bytes(d.req_size)} up`,
      `${bytes(d.resp_size)} down`, d.duration_ms != null ? ms(d.duration_ms) : null,
    ].filter(Boolean).join(' · ')),
    d.error ? el('div', { class: 'error', style: 'color:var(--err)' }, `error: ${d.error}`) : null,
    curlOut,
    msgs ? section(d.status === 101 ? 'Messages' : 'Events', msgs) : null,
    section('Timing', waterfall(d.timings)),
    d.tls ? section('TLS', tlsTable(d.tls)) : null,
    section('Rules', rulesList(d.rules)),
    section('Request headers', headersTable(d.request.headers)),
    section('Request body', reqBody),
    section('Response headers', headersTable(d.response.headers)),
    section('Response body', respBody),
  ].filter(Boolean));
  if (msgs) messages = new MessagesView(msgs, d);
  try {
    renderBody(reqBody, d.id, 'request', d.request.body);
    renderBody(respBody, d.id, 'response', d.response.body);
  } catch (e) {
    showError(`record ${d.id}: cannot show a body: ${e.message}`);
  }
}
