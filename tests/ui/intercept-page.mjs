// A page of many subresources loaded by headless Chromium through sluice's
// HTTPS interception, run by tests/it/intercept_clients.rs. That test
// starts the origin and sluice, and runs this script with HOME set to a
// folder whose .pki/nssdb trusts sluice's CA (Chromium on Linux reads the
// user's NSS database from there).
//
// Env: PAGE_URL (https://localhost:PORT/...), SLUICE_PROXY (http://host:port),
// CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line on stdout: {"ok", "status", "report"} where report
// is what the page's own script saw (window.report()), or {"ok": false,
// "error"}; exits 1 when the page did not load.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const PAGE_URL = process.env.PAGE_URL;
const PROXY = process.env.SLUICE_PROXY;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// A fresh profile (--user-data-dir) for every run: nothing cached, no
// session or socket of an earlier run.
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-intercept-'));
let out;
try {
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--proxy-server=${PROXY}`,
      // Chromium sends nothing for localhost through a proxy unless told:
      // `<-loopback>` removes the implicit bypass.
      '--proxy-bypass-list=<-loopback>'],
  });
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(10000);
    const resp = await page.goto(PAGE_URL, { waitUntil: 'load' });
    const report = await page.evaluate(() => window.report());
    out = { ok: true, status: resp.status(), report };
  } finally {
    await ctx.close();
  }
} catch (e) {
  out = { ok: false, error: e.message };
} finally {
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
