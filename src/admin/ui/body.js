// Body views for the detail pane: pretty JSON, text, images (blob URL),
// hex for binary. Long bodies are shown a page at a time (a "more" button
// adds the next), so a 4 MiB body never freezes the page.

import { api, showError } from './api.js';
import { bytes, el } from './format.js';

const TEXT_PAGE = 64 * 1024;
const HEX_PAGE = 16 * 1024;
const PRETTY_MAX = 2 * 1024 * 1024;

function isJson(ct, text) {
  if (ct && /json/i.test(ct)) return true;
  const t = text.trimStart();
  return t.startsWith('{') || t.startsWith('[');
}

// Appends `total` units to `pre` a page at a time.
function paged(container, pre, total, pageSize, chunk) {
  let shown = 0;
  const more = el('button', { class: 'more' });
  const step = () => {
    const end = Math.min(total, shown + pageSize);
    pre.append(chunk(shown, end));
    shown = end;
    if (shown < total) {
      more.textContent = `Show more (${bytes(total - shown)} left)`;
    } else {
      more.remove();
    }
  };
  more.addEventListener('click', step);
  container.append(pre, more);
  step();
}

export function hexLines(data, start, end) {
  const lines = [];
  for (let off = start; off < end; off += 16) {
    const row = data.subarray(off, Math.min(off + 16, end));
    let hex = '';
    let ascii = '';
    for (let i = 0; i < 16; i++) {
      if (i < row.length) {
        hex += row[i].toString(16).padStart(2, '0') + ' ';
        ascii += row[i] >= 32 && row[i] < 127 ? String.fromCharCode(row[i]) : '.';
      } else {
        hex += '   ';
      }
      if (i === 7) hex += ' ';
    }
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex} ${ascii}\n`);
  }
  return lines.join('');
}

export function base64Bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// Renders one body (`view` is the record's BodyView) into `container`.
export function renderBody(container, id, dir, view) {
  const ct = view.content_type || '';
  const notes = [];
  if (view.size) notes.push(`${bytes(view.size)} on the wire`);
  if (view.decoded) notes.push(`decoded from ${view.encoding}`);
  if (view.decode_error) notes.push(`not decoded (${view.encoding}): ${view.decode_error}`);
  if (view.truncated) notes.push(`capture cut at ${bytes(view.captured)}`);
  if (view.inline_truncated) notes.push('shown in part: download for the rest');
  if (view.dropped) notes.push('not captured (recorder queue full)');
  const download = el('a', { href: `/api/records/${id}/body/${dir}?decode=1`, download: `${dir}-${id}.bin` }, 'download');
  container.append(el('div', { class: 'muted' }, notes.join(' · '), notes.length ? ' · ' : '', download));
  const pre = el('pre', { class: 'body', 'data-dir': dir });
  if (view.text == null && view.base64 == null) {
    container.append(el('div', { class: 'muted' }, '(no body)'));
    return;
  }
  if (/^image\//i.test(ct)) {
    const img = el('img', { class: 'body', alt: `${dir} body` });
    container.append(img);
    api(`/api/records/${id}/body/${dir}?decode=1`)
      .then((r) => r.blob())
      .then((b) => {
        img.src = URL.createObjectURL(b);
        img.addEventListener('load', () => URL.revokeObjectURL(img.src), { once: true });
      })
      .catch(() => img.replaceWith(el('div', { class: 'muted' }, 'image could not be loaded')));
    return;
  }
  if (view.text != null) {
    let text = view.text;
    if (!text.length) { container.append(el('div', { class: 'muted' }, '(empty)')); return; }
    if (text.length <= PRETTY_MAX && isJson(ct, text)) {
      try {
        text = JSON.stringify(JSON.parse(text), null, 2);
        pre.classList.add('json');
      } catch (_) { /* not JSON after all: shown as text */ }
    }
    paged(container, pre, text.length, TEXT_PAGE, (a, b) => text.slice(a, b));
    return;
  }
  let data;
  try { data = base64Bytes(view.base64); } catch (e) { showError(`body ${dir}: ${e.message}`); return; }
  pre.classList.add('hex');
  paged(container, pre, data.length, HEX_PAGE, (a, b) => hexLines(data, a, b));
}
