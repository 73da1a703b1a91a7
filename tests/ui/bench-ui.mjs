// UI benchmark (run by bench/ui.sh, which starts sluice on a store filled
// with fill_records and an origin): first contentful paint over loopback,
// page transfer bytes, live-record latency (response end -> row shown),
// and long tasks while scrolling the record list.
//
// Env: SLUICE_ADMIN, SLUICE_PROXY, SLUICE_ORIGIN, CHROMIUM, RUNS (5),
// LIVE (20), SCROLL_MS (6000). Prints one JSON line.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';

const ADMIN = process.env.SLUICE_ADMIN;
const PROXY = new URL(process.env.SLUICE_PROXY);
const ORIGIN = process.env.SLUICE_ORIGIN;
const RUNS = Number(process.env.RUNS || 5);
const LIVE = Number(process.env.LIVE || 20);
const SCROLL_MS = Number(process.env.SCROLL_MS || 6000);

const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function viaProxy(p) {
  return new Promise((resolve, reject) => {
    const target = new URL(p, ORIGIN);
    const req = http.request({ host: PROXY.hostname, port: PROXY.port, path: target.href, headers: { host: target.host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(Date.now()));
    });
    req.on('error', reject);
    req.end();
  });
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, median: q(0.5), p95: q(0.95), max: s[s.length - 1] };
};

async function withContext(fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-bench-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args,
    viewport: { width: 1400, height: 900 },
  });
  try {
    return await fn(ctx.pages()[0] || await ctx.newPage());
  } finally {
    await ctx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const result = {};

// First paint and transfer, each run in a fresh profile (cold cache).
const fcp = [];
const transfer = [];
for (let i = 0; i < RUNS; i++) {
  await withContext(async (page) => {
    await page.goto(ADMIN, { waitUntil: 'load' });
    await page.waitForSelector('#viewport .row[data-id]');
    await page.waitForTimeout(500);
    const m = await page.evaluate(() => {
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      const nav = performance.getEntriesByType('navigation')[0];
      let bytes = nav.transferSize;
      let staticBytes = nav.transferSize;
      for (const r of performance.getEntriesByType('resource')) {
        bytes += r.transferSize;
        if (r.name.includes('/ui/')) staticBytes += r.transferSize;
      }
      return { fcp: paint ? paint.startTime : -1, bytes, staticBytes };
    });
    fcp.push(m.fcp);
    transfer.push(m);
  });
}
result.first_contentful_paint_ms = stats(fcp);
result.transfer_bytes_first_load = transfer[0];

await withContext(async (page) => {
  await page.goto(ADMIN);
  await page.waitForSelector('#viewport .row[data-id]');
  await page.waitForTimeout(500);

  // Live latency: the row for each request, timed from the response end.
  const lat = [];
  for (let i = 0; i < LIVE; i++) {
    const tag = `bench-live-${Date.now()}-${i}`;
    const seen = page.waitForFunction((t) => {
      for (const c of document.querySelectorAll('#viewport .row[data-id] .c-path')) if (c.textContent.includes(t)) return true;
      return false;
    }, tag, { polling: 'raf', timeout: 10000 });
    const ended = await viaProxy(`/?${tag}`);
    await seen;
    lat.push(Date.now() - ended);
    await page.waitForTimeout(100);
  }
  result.live_row_latency_ms = stats(lat);

  // Scrolling: long tasks (PerformanceObserver 'longtask', >50 ms each)
  // while the list scrolls steadily, then jumps around.
  const scroll = await page.evaluate(async (ms) => {
    const long = [];
    const obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) long.push(e.duration); });
    obs.observe({ type: 'longtask', buffered: false });
    const vp = document.getElementById('viewport');
    const frames = [];
    const t0 = performance.now();
    let last = t0;
    await new Promise((done) => {
      const step = (now) => {
        frames.push(now - last);
        last = now;
        const el = now - t0;
        if (el < ms * 0.7) vp.scrollTop += 1500;
        else vp.scrollTop = Math.floor(Math.random() * vp.scrollHeight);
        if (el < ms) requestAnimationFrame(step); else done();
      };
      requestAnimationFrame(step);
    });
    await new Promise((r) => setTimeout(r, 300));
    const during = long.length;
    // Calibration: a deliberate 120 ms task must be seen, or the observer
    // is not working and "no long task" would mean nothing.
    const spin = performance.now();
    while (performance.now() - spin < 120) { /* busy */ }
    await new Promise((r) => setTimeout(r, 300));
    const calibrated = long.length > during;
    long.length = during;
    obs.disconnect();
    const s = [...frames].sort((a, b) => a - b);
    return {
      total_rows: Math.round(document.getElementById('spacer').offsetHeight / 22),
      count_text: document.getElementById('net-count').textContent,
      observer_saw_calibration_task: calibrated,
      long_tasks: long.length,
      longest_task_ms: long.length ? Math.max(...long) : 0,
      frames: frames.length,
      frame_ms_median: s[Math.floor(s.length / 2)],
      frame_ms_p99: s[Math.floor(s.length * 0.99)],
      frame_ms_max: s[s.length - 1],
    };
  }, SCROLL_MS);
  result.scroll = scroll;
});

console.log(JSON.stringify(result));
