// WebSockets from headless Chromium through sluice, and their messages in
// sluice's web UI, run by tests/it/ws_browser.rs (which starts the echo
// origins and sluice with interception on, and sets HOME to a folder
// whose NSS database trusts sluice's CA).
//
// Browser A (proxied) opens ws:// (Chromium tunnels it with CONNECT) and
// wss:// (intercepted) and talks on both; browser B (not proxied) opens
// the admin UI and checks the Messages section of each record: rows with
// direction, opcode and preview, JSON pretty-printed, binary as hex, the
// text and direction filters, a message arriving live while the
// connection is open, the close code.
//
// Env: WS_URL, WSS_URL, SLUICE_PROXY, SLUICE_ADMIN, SLUICE_TOKEN,
// SLUICE_OUT (screenshots), CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line: {"ok", "checks", "failures"}; exits 1 on failure.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const { WS_URL, WSS_URL, SLUICE_PROXY, SLUICE_ADMIN, SLUICE_TOKEN } = process.env;
const OUT = process.env.SLUICE_OUT || 'target/ui-test-output';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(OUT, { recursive: true });
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const checks = {};
const failures = [];
async function check(name, fn) {
  try {
    checks[name] = (await fn()) ?? true;
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    checks[name] = false;
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// In the proxied page: opens a WebSocket kept as window.socks[name].
function openSocket([name, url]) {
  window.socks = window.socks || {};
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const s = { ws, got: [], closed: null };
    window.socks[name] = s;
    ws.onmessage = (e) => s.got.push(typeof e.data === 'string' ? e.data : `bin:${new Uint8Array(e.data).join(',')}`);
    ws.onopen = () => resolve(ws.extensions);
    ws.onerror = () => reject(new Error(`${name}: WebSocket error`));
    ws.onclose = (e) => { s.closed = [e.code, e.reason]; };
  });
}

// In the proxied page: sends `items` and waits for every echo.
function talk([name, items]) {
  const s = window.socks[name];
  const want = s.got.length + items.length;
  for (const it of items) s.ws.send(Array.isArray(it) ? new Uint8Array(it) : it);
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const poll = () => {
      if (s.got.length >= want) resolve(s.got.slice());
      else if (Date.now() - t0 > 8000) reject(new Error(`${name}: ${s.got.length} of ${want} echoes`));
      else setTimeout(poll, 20);
    };
    poll();
  });
}

const visibleRows = (page) => page.locator('#messages .viewport .row:not([hidden])');

// In the UI: opens the record whose path cell is `urlPath` and waits for
// `n` messages in its Messages section.
async function openRecord(ui, urlPath, n) {
  await ui.locator('#viewport .row[data-id]:not([hidden])', { hasText: urlPath }).first().click();
  await ui.waitForSelector('#messages .msg-counts');
  await ui.waitForFunction((k) => document.querySelectorAll('#messages .viewport .row:not([hidden])').length >= k, n);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-ws-'));
let browserA;
let browserB;
try {
  browserA = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...ARGS, `--proxy-server=${SLUICE_PROXY}`, '--proxy-bypass-list=<-loopback>'],
  });
  const page = browserA.pages()[0] || await browserA.newPage();
  page.setDefaultTimeout(10000);
  await page.goto('about:blank');
  browserB = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const ui = await browserB.newPage();
  ui.setDefaultTimeout(10000);
  const pageErrors = [];
  ui.on('pageerror', (e) => pageErrors.push(e.message));

  await check('ws_and_wss_open_through_sluice', async () => {
    await page.evaluate(openSocket, ['plain', WS_URL]);
    await page.evaluate(openSocket, ['secure', WSS_URL]);
    const json = JSON.stringify({ user: 'ada', tags: ['x', 'y'], n: 3 });
    // One at a time: each echo is back before the next message goes,
    // so the record's order is known.
    let plain = [];
    for (const m of ['hello plain', json, [0, 1, 2, 255]]) plain = await page.evaluate(talk, ['plain', [m]]);
    assert(plain[0] === 'hello plain' && plain[1] === json && plain[2] === 'bin:0,1,2,255', `echoes: ${plain}`);
    let secure = [];
    for (const m of ['hello secure', 'second']) secure = await page.evaluate(talk, ['secure', [m]]);
    assert(secure.join('|') === 'hello secure|second', `wss echoes: ${secure}`);
    return 'echoes back on ws:// and wss://';
  });

  await check('messages_section_lists_the_conversation', async () => {
    await ui.goto(`${SLUICE_ADMIN}/?token=${encodeURIComponent(SLUICE_TOKEN)}`);
    await ui.waitForSelector('#viewport .row[data-id]');
    const type = await ui.locator('#viewport .row[data-id]:not([hidden])', { hasText: '/chat' }).first().locator('.c-type').textContent();
    assert(type.startsWith('websocket'), `type column: ${type}`);
    await openRecord(ui, '/chat', 6);
    const rows = await visibleRows(ui).evaluateAll((rs) => rs.map((r) => [...r.children].map((c) => c.textContent)));
    const dirs = rows.map((r) => r[0]).join('');
    assert(dirs === '↑↓↑↓↑↓', `directions: ${dirs}`);
    const ops = rows.map((r) => r[2]).join(',');
    assert(ops === 'text,text,text,text,binary,binary', `opcodes: ${ops}`);
    assert(rows[0][4] === 'hello plain', `preview: ${rows[0][4]}`);
    assert(rows[4][4] === '00 01 02 ff', `binary preview: ${rows[4][4]}`);
    await ui.screenshot({ path: path.join(OUT, 'ws-messages.png') });
    return `${rows.length} rows`;
  });

  await check('json_pretty_and_binary_as_hex', async () => {
    await visibleRows(ui).nth(2).click();
    const json = await ui.locator('#messages .msg-full pre.json').textContent();
    assert(json.includes('"user": "ada"') && json.includes('\n  "tags"'), `JSON shown as: ${json}`);
    await visibleRows(ui).nth(4).click();
    const hex = await ui.locator('#messages .msg-full pre.hex').textContent();
    assert(hex.startsWith('00000000  00 01 02 ff'), `hex: ${hex}`);
    return 'pretty JSON, hex dump';
  });

  await check('filters_by_text_and_direction', async () => {
    await ui.fill('#messages .msg-filter', 'ADA');
    await ui.waitForFunction(() => document.querySelectorAll('#messages .viewport .row:not([hidden])').length === 2);
    await ui.fill('#messages .msg-filter', '');
    await ui.selectOption('#messages .msg-direction', 'send');
    await ui.waitForFunction(() => {
      const r = [...document.querySelectorAll('#messages .viewport .row:not([hidden])')];
      return r.length === 3 && r.every((x) => x.classList.contains('send'));
    });
    await ui.selectOption('#messages .msg-direction', '');
    await ui.waitForFunction(() => document.querySelectorAll('#messages .viewport .row:not([hidden])').length === 6);
    return 'text filter 2 rows, sent only 3';
  });

  await check('live_while_open_then_close_code', async () => {
    await ui.waitForFunction(() => document.querySelector('#messages .msg-state').textContent.includes('live'));
    await page.evaluate(talk, ['plain', ['arrived live']]);
    await ui.waitForFunction(() => [...document.querySelectorAll('#messages .viewport .row:not([hidden]) .m-text')]
      .filter((c) => c.textContent === 'arrived live').length === 2);
    await page.evaluate(() => window.socks.plain.ws.close(4001, 'bye now'));
    await page.waitForFunction(() => window.socks.plain.closed !== null);
    const closed = await page.evaluate(() => window.socks.plain.closed);
    assert(closed[0] === 4001 && closed[1] === 'bye now', `browser saw close ${closed}`);
    await ui.waitForFunction(() => [...document.querySelectorAll('#messages .viewport .row:not([hidden]) .m-text')]
      .some((c) => c.textContent === '4001 bye now'));
    const state = await ui.locator('#messages .msg-state').textContent();
    assert(state.includes('closed 4001'), `state: ${state}`);
    await ui.locator('#messages .viewport .row.close').first().click();
    const full = await ui.locator('#messages .msg-close').first().textContent();
    assert(full.includes('4001') && full.includes('bye now'), `close shown as: ${full}`);
    return 'live echo, close 4001 shown';
  });

  await check('wss_record_intercepted_with_messages', async () => {
    await ui.reload();
    await ui.waitForSelector('#viewport .row[data-id]');
    await openRecord(ui, '/secure', 4);
    const texts = await visibleRows(ui).locator('.m-text').allTextContents();
    assert(texts.slice(0, 4).join('|') === 'hello secure|hello secure|second|second', `wss rows: ${texts}`);
    const type = await ui.locator('#viewport .row[data-id]:not([hidden])', { hasText: '/chat' }).first().locator('.c-type').textContent();
    assert(/^websocket · \d+ msg$/.test(type), `the closed WebSocket's row: ${type}`);
    return texts.length;
  });

  await check('no_page_errors', async () => {
    assert(!pageErrors.length, pageErrors.join('; '));
  });
} catch (e) {
  failures.push(`setup: ${e.message}`);
} finally {
  if (browserA) await browserA.close().catch(() => {});
  if (browserB) await browserB.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
const ok = failures.length === 0;
console.log(JSON.stringify({ ok, checks, failures }));
process.exit(ok ? 0 : 1);
