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
// A peer's markup that ran would most likely open a dialog.
ctx.on('page', (p) => p.on('dialog', (d) => { pageErrors.push(`dialog: ${d.message()}`); d.dismiss(); }));
page.on('dialog', (d) => { pageErrors.push(`dialog: ${d.message()}`); d.dismiss(); });
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
    await page.waitForFunction(() => {
      const paths = [...document.querySelectorAll('#viewport .row[data-id]:not([hidden]) .c-path')].map((c) => c.textContent);
      return paths.length > 0 && paths.every((p) => p.includes('data.json'));
    });
    // A recycled row keeps its old text while hidden: click a shown one.
    await page.locator('#viewport .row[data-id]:not([hidden])', { hasText: 'data.json' }).first().click();
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
    await page.waitForFunction(() => document.querySelectorAll('#viewport .row[data-id]:not([hidden])').length > 2);
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

  await check('ca_link_and_trust_page', async () => {
    const link = await page.waitForSelector('header #ca-link');
    assert(await link.isVisible(), 'the CA link is not visible');
    assert(/CA certificate/.test(await link.textContent()), 'the link does not say CA certificate');
    assert((await link.getAttribute('href')) === '/ca', 'the link is not /ca');
    // The page and the certificate are public: no token, no cookie.
    const pem = await fetch(`${ADMIN}/ca.pem`);
    assert(pem.status === 200, `/ca.pem without the token answered ${pem.status}`);
    const pemText = await pem.text();
    assert(pemText.startsWith('-----BEGIN CERTIFICATE-----') && !pemText.includes('PRIVATE KEY'), 'not a bare certificate');
    const api = await fetch(`${ADMIN}/api/tls`);
    assert(api.status === 401, `/api/tls without the token answered ${api.status}`);
    const info = await (await fetch(`${ADMIN}/api/tls`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
    const [trust] = await Promise.all([ctx.waitForEvent('page'), link.click()]);
    trust.on('pageerror', (e) => pageErrors.push(`trust page: ${e.message}`));
    await trust.waitForSelector('#sha256');
    const shown = await trust.textContent('#sha256');
    assert(shown === info.ca.sha256, `the page shows ${shown}, /api/tls says ${info.ca.sha256}`);
    // Its style block ran under its CSP (allowed by hash), no script did.
    const styled = await trust.$eval('main', (m) => getComputedStyle(m).maxWidth);
    assert(styled === '860px', `the page's style was blocked (max-width ${styled})`);
    assert((await trust.$$('script')).length === 0, 'the trust page has a script');
    const text = await trust.textContent('main');
    for (const s of ['update-ca-certificates', 'NODE_EXTRA_CA_CERTS', 'keytool', 'Certificate Trust Settings']) {
      assert(text.includes(s), `the trust page lacks ${s}`);
    }
    await trust.screenshot({ path: path.join(OUT, '5-trust-page.png'), fullPage: false });
    await trust.close();
    return `link to /ca; page shows ${shown.slice(0, 11)}…`;
  });

  await check('tls_list_and_detail', async () => {
    const rowText = (frag) => page.$$eval('#viewport .row[data-id]', (rows, f) => {
      const r = rows.find((x) => !x.hidden && x.querySelector('.c-path').textContent.includes(f));
      return r ? { tls: r.querySelector('.c-tls').textContent, bad: r.querySelector('.c-tls').classList.contains('bad'), title: r.querySelector('.c-tls').title } : null;
    }, frag);
    // Recycled rows keep their old text while hidden: only shown rows count.
    // The list before the filter applies may show the same rows: wait for
    // one that holds only matches.
    const shownPaths = (filter, want) => page.waitForFunction(([f, w]) => {
      const paths = [...document.querySelectorAll('#viewport .row[data-id]:not([hidden]) .c-path')].map((c) => c.textContent);
      return paths.every((p) => p.includes(f)) && w.every((x) => paths.some((p) => p.includes(x)));
    }, [filter, want]);
    await page.fill('#filter', 'tls-');
    await page.press('#filter', 'Enter');
    await shownPaths('tls-', ['tls-verified', 'tls-hostile']);
    const verified = await rowText('tls-verified');
    assert(verified && verified.tls === 'decrypted' && !verified.bad, `verified row: ${JSON.stringify(verified)}`);
    const hostile = await rowText('tls-hostile');
    assert(hostile && hostile.tls === 'NOT verified' && hostile.bad && hostile.title.startsWith('decrypted'), `hostile row: ${JSON.stringify(hostile)}`);
    // Tunnels: intercepted, passed through (and why), refused (and why).
    await page.fill('#filter', 'kind:tunnel');
    await page.press('#filter', 'Enter');
    const shownMarks = () => [...document.querySelectorAll('#viewport .row[data-id]:not([hidden])')]
      .map((r) => [r.querySelector('.c-method').textContent, r.querySelector('.c-tls').textContent]);
    const want = ['intercepted', 'passthrough (not_selected)', 'refused (unknown_ca)'];
    const settled = await page.waitForFunction((w) => {
      const marks = [...document.querySelectorAll('#viewport .row[data-id]:not([hidden])')]
        .map((r) => [r.querySelector('.c-method').textContent, r.querySelector('.c-tls').textContent]);
      return marks.length > 0 && marks.every(([m]) => m === 'CONNECT') && w.every((x) => marks.some(([, t]) => t === x));
    }, want).then(() => true, () => false);
    const marks = (await page.evaluate(shownMarks)).map(([, t]) => t);
    assert(settled, `tunnel rows do not show ${want.join(', ')}: ${marks}`);
    // The hostile exchange's detail: both legs, the certificate's
    // subject as text, NOT verified.
    await page.fill('#filter', 'tls-hostile');
    await page.press('#filter', 'Enter');
    await shownPaths('tls-hostile', ['tls-hostile']);
    await page.locator('#viewport .row[data-id]:not([hidden])', { hasText: 'tls-hostile' }).first().click();
    await page.waitForSelector('#detail #tls');
    const rows = await page.$$eval('#detail #tls tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    const get = (k) => (rows.find(([label]) => label === k) || [])[1];
    assert(get('SNI') === 'localhost', `SNI: ${get('SNI')}`);
    assert(/^TLS/.test(get('client leg') || ''), `client leg: ${get('client leg')}`);
    assert(/^TLS/.test(get('upstream leg') || ''), `upstream leg: ${get('upstream leg')}`);
    assert((get('upstream certificate') || '').includes('<script>alert(1)</script>'), `subject not shown as text: ${get('upstream certificate')}`);
    assert(get('expires'), 'no expiry');
    assert(get('upstream verified') === 'NOT verified', `verified: ${get('upstream verified')}`);
    assert(await page.$eval('#detail #tls td.bad', (td) => td.textContent) === 'NOT verified', 'NOT verified is not marked');
    assert((await page.$$('#detail script, #detail img')).length === 0, 'the subject became markup');
    await shot(page, '6-network-tls');
    await page.fill('#filter', '');
    await page.press('#filter', 'Enter');
    return `list: ${marks.join(', ')}; detail: ${rows.length} TLS rows, subject as text`;
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
    // The RSS chart splits the total into the process's own memory and page cache.
    const rssSeries = await page.$$eval('#chart-rss .u-legend .u-label', (ls) => ls.map((l) => l.textContent));
    for (const want of ['total', 'anon', 'file']) assert(rssSeries.includes(want), `RSS chart has no ${want} series: ${rssSeries}`);
    await page.waitForSelector('#watchdog-state');
    await page.waitForSelector('#users-table tbody tr');
    await page.waitForTimeout(300);
    await shot(page, '3-dashboard');
    return await page.$eval('#chart-rss', (d) => `${d.dataset.points} samples, series ${[...d.querySelectorAll('.u-legend .u-label')].map((l) => l.textContent).join(' ')}`);
  });

  await check('rule_line_error', async () => {
    await page.click('#tabs [data-tab=rules]');
    await page.waitForFunction(() => document.getElementById('rules-text').value.includes('data.json'));
    const good = await page.inputValue('#rules-text');
    // The file's own rules come first; the lines added here follow them.
    const n = good.trimEnd().split('\n').length;
    await page.fill('#rules-text', `${good.trimEnd()}\n# a comment\nexample.com bogus://x\n`);
    await page.click('#rules-validate');
    const err = await page.waitForSelector(`#rules-errors li[data-line="${n + 2}"]`);
    const msg = await err.textContent();
    assert(await page.$(`#gutter .bad[data-line="${n + 2}"]`), `line ${n + 2} is not marked in the gutter`);
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
    await page.waitForFunction((l) => document.getElementById('test-result').textContent.includes(l), `L${n + 1}`);
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
