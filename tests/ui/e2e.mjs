// Browser test of the sluice web UI, run by tests/it/ui_browser.rs (which
// starts sluice with an admin token, an origin and some traffic first).
//
// Env: SLUICE_ADMIN, SLUICE_PROXY, SLUICE_ORIGIN (http://host:port),
// SLUICE_TOKEN, SLUICE_OUT (screenshots and the HAR go here),
// CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line on stdout: {"ok", "checks": {name: detail},
// "failures": [..], "figures": {..}}; exits 1 on any failure.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import net from 'node:net';

const ADMIN = process.env.SLUICE_ADMIN;
const PROXY = new URL(process.env.SLUICE_PROXY);
const ORIGIN = process.env.SLUICE_ORIGIN;
const TOKEN = process.env.SLUICE_TOKEN;
const OUT = process.env.SLUICE_OUT || 'target/ui-test-output';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
fs.mkdirSync(OUT, { recursive: true });

const checks = {};
const failures = [];
const figures = {};

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

// One request through the proxy; resolves when the response has ended.
function viaProxy(urlPath, { method = 'GET', body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const target = new URL(urlPath, ORIGIN);
    const req = http.request({
      host: PROXY.hostname, port: PROXY.port, method, path: target.href,
      headers: { host: target.host, ...headers }, agent: false,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, ended: performance.now(), body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error('proxy request timed out')));
    if (body) req.write(body);
    req.end();
  });
}

// A CONNECT tunnel through the proxy to the origin, left open.
function openTunnel() {
  return new Promise((resolve, reject) => {
    const o = new URL(ORIGIN);
    const s = net.connect(Number(PROXY.port), PROXY.hostname, () => {
      s.write(`CONNECT ${o.host} HTTP/1.1\r\nHost: ${o.host}\r\n\r\n`);
    });
    let head = '';
    const onData = (d) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        s.off('data', onData);
        if (!head.startsWith('HTTP/1.1 200')) reject(new Error(`CONNECT refused: ${head.split('\r\n')[0]}`));
        else resolve(s);
      }
    };
    s.on('data', onData);
    s.on('error', reject);
  });
}

const shot = (page, name) => page.screenshot({ path: path.join(OUT, `${name}.png`) });

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-ui-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  acceptDownloads: true,
  viewport: { width: 1400, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = ctx.pages()[0] || await ctx.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => { if (m.type() === 'error' && !/401|Failed to load resource/.test(m.text())) pageErrors.push(m.text()); });
page.setDefaultTimeout(10000);

try {
  await check('token_required', async () => {
    const api = await fetch(`${ADMIN}/api/records`);
    assert(api.status === 401, `/api/records without the token answered ${api.status}`);
    const asset = await fetch(`${ADMIN}/ui/app.js`);
    assert(asset.status === 401, `/ui/app.js without the token answered ${asset.status}`);
    await page.goto(ADMIN);
    await page.waitForSelector('#token');
    assert(!(await page.$('#filter')), 'the app was served without the token');
    await shot(page, '0-login');
    await page.fill('#token', 'wrong-token-wrong-token');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.getElementById('err').textContent.includes('Wrong'));
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForSelector('#filter');
    // Kept for the session: a reload goes straight to the app.
    await page.reload();
    await page.waitForSelector('#filter');
    return 'prompt, wrong token refused, right token kept across a reload';
  });

  await check('rows_listed', async () => {
    await page.waitForSelector('#viewport .row[data-id]');
    return await page.$$eval('#viewport .row[data-id]', (r) => r.length);
  });

  await check('row_appears_live', async () => {
    const tag = `live-${Date.now()}`;
    const seen = page.waitForFunction((t) => [...document.querySelectorAll('#viewport .row[data-id] .c-path')]
      .some((c) => c.textContent.includes(t)) && performance.now(), tag, { polling: 'raf', timeout: 10000 });
    const r = await viaProxy(`/text/${tag}`);
    assert(r.status === 200, `proxy answered ${r.status}`);
    const ended = Date.now();
    await seen;
    const latency = Date.now() - ended;
    figures.live_row_latency_ms = latency;
    return `row shown ${latency} ms after the response ended`;
  });

  await check('filter_works', async () => {
    await page.fill('#filter', 'status:5xx');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#viewport .row[data-id]')].filter((r) => !r.hidden);
      return rows.length > 0 && rows.every((r) => r.querySelector('.c-status').textContent.startsWith('5'));
    });
    const n5 = await page.$$eval('#viewport .row[data-id]', (r) => r.filter((x) => !x.hidden).length);
    await page.fill('#filter', 'method:POST');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#viewport .row[data-id]')].filter((r) => !r.hidden);
      return rows.length > 0 && rows.every((r) => r.querySelector('.c-method').textContent === 'POST');
    });
    // A live row that does not match the filter stays out.
    await viaProxy('/status/503');
    await page.waitForTimeout(700);
    const methods = await page.$$eval('#viewport .row[data-id] .c-method', (c) => c.filter((x) => !x.closest('.row').hidden).map((x) => x.textContent));
    assert(methods.every((m) => m === 'POST'), `non-POST rows under method:POST: ${methods}`);
    await page.fill('#filter', 'bogus:1');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => document.getElementById('status').textContent.includes('unknown filter field'));
    return `status:5xx showed ${n5} rows; method:POST only POST; bad field reported`;
  });

  await check('detail_headers_and_decoded_body', async () => {
    await page.fill('#filter', 'data.json');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#viewport .row[data-id] .c-path')].some((c) => c.textContent.includes('data.json')));
    await page.click('#viewport .row[data-id]');
    await page.waitForSelector('#detail pre.body[data-dir=response]');
    const text = await page.textContent('#detail');
    assert(/x-ui-test/i.test(text), 'the request header x-ui-test is not shown');
    assert(/content-encoding/i.test(text) && /gzip/.test(text), 'the response headers are not shown');
    assert(text.includes('decoded from gzip'), 'the body is not said to be decoded from gzip');
    const body = await page.textContent('#detail pre.body[data-dir=response]');
    assert(body.includes('"hello": "sluice"'), `the decoded body is not pretty JSON: ${body.slice(0, 200)}`);
    assert(text.includes('L1'), 'the rule that touched it (L1) is not listed');
    await page.click('#copy-curl');
    const curl = await page.textContent('#curl-out');
    assert(curl.startsWith('curl ') && curl.includes('/data.json') && curl.includes('x-ui-test'), `curl: ${curl}`);
    await shot(page, '1-network-detail');
    return 'headers, gzip-decoded pretty JSON, rule L1, curl';
  });

  await check('keyboard', async () => {
    await page.fill('#filter', '');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#viewport .row[data-id]').length > 2);
    await page.press('#filter', 'Escape');
    await page.keyboard.press('Escape');
    assert(await page.$eval('#detail', (d) => d.hidden), 'Esc did not close the detail');
    for (const k of ['j', 'j', 'ArrowDown', 'k']) await page.keyboard.press(k);
    const sel = await page.$eval('#viewport .row.sel', (r) => r._index);
    assert(sel === 1, `j j k selected row ${sel}, not 1`);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#detail:not([hidden]) #copy-curl');
    await page.keyboard.press('/');
    assert(await page.evaluate(() => document.activeElement.id === 'filter'), '/ did not focus the filter');
    return 'j/k, Enter, Esc, /';
  });

  await check('pause_and_clear', async () => {
    await page.click('#pause');
    await viaProxy('/text/paused-row');
    await page.waitForFunction(() => document.getElementById('net-count').textContent.includes('1 waiting'));
    const before = await page.$$eval('#viewport .row[data-id] .c-path', (c) => c.some((x) => x.textContent.includes('paused-row')));
    assert(!before, 'a row was added while paused');
    await page.click('#pause');
    await page.waitForFunction(() => [...document.querySelectorAll('#viewport .row[data-id] .c-path')].some((x) => x.textContent.includes('paused-row')));
    await page.click('#clear');
    await page.waitForFunction(() => document.querySelectorAll('#viewport .row[data-id]:not([hidden])').length === 0);
    return 'paused rows buffered then shown; clear empties';
  });

  await check('har_download', async () => {
    await page.fill('#filter', 'data.json');
    await page.press('#filter', 'Enter');
    await page.waitForFunction(() => document.getElementById('har').href.includes('url=data.json'));
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#har')]);
    const file = path.join(OUT, 'filtered.har');
    await dl.saveAs(file);
    const har = JSON.parse(fs.readFileSync(file, 'utf8'));
    const urls = har.log.entries.map((e) => e.request.url);
    assert(urls.length >= 1, 'the HAR has no entries');
    assert(urls.every((u) => u.includes('data.json')), `the HAR holds entries outside the filter: ${urls}`);
    await page.fill('#filter', '');
    await page.press('#filter', 'Enter');
    await shot(page, '1-network');
    return `${urls.length} entries`;
  });

  await check('close_connection', async () => {
    const tunnel = await openTunnel();
    const port = String(tunnel.localPort);
    const closed = new Promise((res) => tunnel.on('close', res));
    await page.click('#tabs [data-tab=connections]');
    await page.fill('#conn-filter', `:${port}`);
    const row = await page.waitForSelector(`#conn-table tbody tr:has(td:text("tunnel"))`);
    await page.waitForSelector('#tcp-states #orphans');
    await shot(page, '2-connections');
    await row.$eval('button.kill', (b) => b.click());
    const t = await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 5000))]);
    assert(t === 'closed', 'the tunnel was not closed');
    await page.waitForFunction(() => !document.querySelector('#conn-table tbody tr td') || ![...document.querySelectorAll('#conn-table tbody tr td')].some((td) => td.textContent === 'tunnel'));
    const orphans = await page.textContent('#orphans');
    return `tunnel from port ${port} closed from the page; ${orphans}`;
  });

  await check('dashboard_has_data', async () => {
    await page.click('#tabs [data-tab=dashboard]');
    for (const id of ['rss', 'cpu', 'fds', 'conns', 'rps', 'bps']) {
      await page.waitForFunction((i) => Number(document.getElementById(`chart-${i}`)?.dataset.points) > 0, id);
      assert(await page.$(`#chart-${id} canvas`), `chart ${id} has no canvas`);
    }
    await page.waitForSelector('#watchdog-state');
    await page.waitForSelector('#users-table tbody tr');
    await page.waitForTimeout(300);
    await shot(page, '3-dashboard');
    return await page.$eval('#chart-rss', (d) => `${d.dataset.points} samples`);
  });

  await check('rule_line_error', async () => {
    await page.click('#tabs [data-tab=rules]');
    await page.waitForFunction(() => document.getElementById('rules-text').value.includes('data.json'));
    const good = await page.inputValue('#rules-text');
    await page.fill('#rules-text', `${good.trimEnd()}\n# a comment\nexample.com bogus://x\n`);
    await page.click('#rules-validate');
    const err = await page.waitForSelector('#rules-errors li[data-line="3"]');
    const msg = await err.textContent();
    assert(await page.$('#gutter .bad[data-line="3"]'), 'line 3 is not marked in the gutter');
    await shot(page, '4-rules-error');
    // Saving a bad file is refused; the running rules stay.
    await page.click('#rules-save');
    await page.waitForFunction(() => document.getElementById('status').textContent.includes('nothing was saved'));
    await page.fill('#rules-text', `${good.trimEnd()}\nexample.com status://404\n`);
    await page.click('#rules-save');
    await page.waitForFunction(() => document.getElementById('rules-state').textContent.startsWith('saved'));
    await page.fill('#test-url', `${ORIGIN}/data.json`);
    await page.click('#test-run');
    await page.waitForFunction(() => document.getElementById('test-result').textContent.includes('L1'));
    await page.fill('#test-url', 'http://example.com/x');
    await page.click('#test-run');
    await page.waitForFunction(() => document.getElementById('test-result').textContent.includes('L2'));
    await shot(page, '4-rules');
    return msg;
  });

  await check('token_in_url', async () => {
    // The address printed at start, `/?token=...`, in a browser with no
    // session: traded for a session, then gone from the address bar.
    await ctx.clearCookies();
    const fresh = await ctx.newPage();
    fresh.on('pageerror', (e) => pageErrors.push(e.message));
    await fresh.goto(`${ADMIN}/?token=${encodeURIComponent(TOKEN)}`);
    await fresh.waitForSelector('#filter');
    assert(!fresh.url().includes('token'), `the token stayed in the address bar: ${fresh.url()}`);
    const cookie = (await ctx.cookies()).find((c) => c.name === 'sluice_admin');
    assert(cookie && cookie.value !== TOKEN && cookie.value.length >= 32, 'the session cookie is a random id, not the token');
    assert(cookie.httpOnly && cookie.sameSite === 'Strict', 'the cookie is HttpOnly and SameSite=Strict');
    await fresh.close();
    return 'token exchanged for a session, dropped from the address bar';
  });

  await check('no_page_errors', async () => {
    assert(pageErrors.length === 0, pageErrors.join(' | '));
  });
} catch (e) {
  failures.push(`script: ${e.stack || e.message}`);
} finally {
  await ctx.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}

const ok = failures.length === 0;
console.log(JSON.stringify({ ok, checks, failures, figures }));
process.exit(ok ? 0 : 1);
