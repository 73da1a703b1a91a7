#!/usr/bin/env bash
# sluice web UI benchmark: first contentful paint over loopback, page
# transfer, live-record latency and long tasks while scrolling a store of
# N records (default 100,000) in headless Chromium.
#
#   bench/ui.sh            100,000 records
#   bench/ui.sh N          N records
#
# Steps: build sluice and the fill_records example; fill a temp store;
# start sluice on it (--admin on an ephemeral loopback port) and a python3
# http.server origin; run tests/ui/bench-ui.mjs (Playwright, Debian's
# chromium). Needs what ./test.sh installs. Prints the figures (JSON and
# a summary); every process started here is killed by PID on exit.
set -euo pipefail
N="${1:-100000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
[ -x /usr/bin/chromium ] || { echo "bench/ui.sh: needs chromium (./test.sh installs it)" >&2; exit 1; }
[ -d tests/ui/node_modules/playwright-core ] || npm ci --prefix tests/ui --no-audit --no-fund

cargo build --release --bin sluice --example fill_records >&2
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "filling $N records..." >&2
target/release/examples/fill_records "$WORK/store" "$N" >&2

python3 -m http.server 0 --bind 127.0.0.1 --directory "$WORK" >"$WORK/origin.log" 2>&1 &
PIDS+=($!)
target/release/sluice --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$WORK/store" 2>"$WORK/sluice.log" &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q "sluice listening" "$WORK/sluice.log" 2>/dev/null && grep -q "Serving HTTP" "$WORK/origin.log" 2>/dev/null && break
  sleep 0.1
done
LINE="$(grep -m1 "sluice listening" "$WORK/sluice.log")"
PROXY="$(sed -E 's/.*proxy=([^ ]+).*/\1/' <<<"$LINE")"
ADMIN="$(sed -E 's/.*admin=([^ ]+).*/\1/' <<<"$LINE")"
ORIGIN_PORT="$(sed -nE 's/.*port ([0-9]+).*/\1/p' "$WORK/origin.log" | head -1)"

SLUICE_ADMIN="http://$ADMIN" SLUICE_PROXY="http://$PROXY" SLUICE_ORIGIN="http://127.0.0.1:$ORIGIN_PORT" \
  node tests/ui/bench-ui.mjs | tee "$WORK/result.json"
python3 - "$WORK/result.json" "$N" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f, l, s, t = r["first_contentful_paint_ms"], r["live_row_latency_ms"], r["scroll"], r["transfer_bytes_first_load"]
print(f"\nrecords in store: {int(sys.argv[2]):,}")
print(f"first contentful paint (loopback, cold profile, n={f['n']}): median {f['median']:.0f} ms, max {f['max']:.0f} ms   (target < 300 ms)")
print(f"page transfer, first load: {t['bytes']:,} bytes ({t['staticBytes']:,} of them UI assets)   (target < 1 MiB)")
print(f"live record -> row (n={l['n']}): median {l['median']} ms, p95 {l['p95']} ms, max {l['max']} ms   (target < 500 ms)")
print(f"scrolling {s['total_rows']:,} rows for the run: long tasks {s['long_tasks']} (observer calibrated: {s['observer_saw_calibration_task']}; {s['count_text']}), longest {s['longest_task_ms']:.0f} ms   (target: none over 100 ms); frames {s['frames']}, frame median {s['frame_ms_median']:.1f} ms, p99 {s['frame_ms_p99']:.1f} ms, max {s['frame_ms_max']:.1f} ms")
PY
