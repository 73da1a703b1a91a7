#!/usr/bin/env bash
# Admin starvation (issue 11, finding 4): /api/health latency while 1,000
# live-feed (SSE) readers and 1,000 idle admin connections are open, and
# peak RSS over idle while 40 readers stall on a 25 MB record (detail and
# raw body) and while 8 clients download a decoded body at once (with the
# proxy's latency meanwhile).
#
# Usage: bench/admin_load.sh [path/to/sluice]   (default target/release/sluice)
# Self-contained and bounded: one origin (python3), one sluice, every
# client loop bounded in count and time; everything started here is
# stopped here, by pid.
set -euo pipefail
BIN=${1:-target/release/sluice}
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release)" >&2; exit 2; }
ulimit -n 8192 2>/dev/null || ulimit -n 4096
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Origin: /big (25 MB, identity), /gz (a gzip body decoding past the
# 64 MiB download cap), /small.
python3 - "$WORK/origin.port" <<'PY' &
import gzip, http.server, os, sys, threading
big = os.urandom(25 * 1024 * 1024)
gz = gzip.compress(b"sluice bench " * (8 * 1024 * 1024), 6)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body, extra = {"/big": (big, {}), "/gz": (gz, {"Content-Encoding": "gzip"})}.get(self.path, (b"x" * 100, {}))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in extra.items(): self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/origin.port" ] && break; sleep 0.1; done
ORIGIN=127.0.0.1:$(cat "$WORK/origin.port")

"$BIN" --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir "$WORK/data" \
  --record-body-limit 32MiB >"$WORK/out" 2>"$WORK/err" &
SLUICE=$!
PIDS+=($SLUICE)
for _ in $(seq 100); do grep -q "sluice admin UI" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
PROXY=$(grep -o 'proxy=[0-9.:]*' "$WORK/err" | head -1 | cut -d= -f2)
ADMIN=$(grep -o 'admin=[0-9.:]*' "$WORK/err" | head -1 | cut -d= -f2)
TOKEN=$(cat "$WORK/data/admin.token")
echo "sluice pid $SLUICE proxy $PROXY admin $ADMIN origin $ORIGIN"

curl -s -o /dev/null -x "http://$PROXY" "http://$ORIGIN/big"
curl -s -o /dev/null -x "http://$PROXY" "http://$ORIGIN/gz"
sleep 1

python3 - "$ADMIN" "$PROXY" "$ORIGIN" "$TOKEN" "$SLUICE" <<'PY'
import asyncio, json, sys, time, statistics
admin, proxy, origin, token, pid = sys.argv[1:6]
ah, ap = admin.rsplit(":", 1); ph, pp = proxy.rsplit(":", 1)
AUTH = f"Authorization: Bearer {token}\r\n"

def rss_kib():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
    return 0

async def request(host, port, head, timeout=10):
    r, w = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    w.write(head.encode()); await w.drain()
    data = await asyncio.wait_for(r.read(), timeout)
    w.close()
    return data

async def health_ms():
    t0 = time.perf_counter()
    d = await request(ah, ap, f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{AUTH}\r\n", 5)
    assert d.startswith(b"HTTP/1.1 200"), d[:80]
    return (time.perf_counter() - t0) * 1000

def summary(xs):
    xs = sorted(xs)
    return f"p50 {statistics.median(xs):.1f} ms, p99 {xs[int(len(xs)*0.99)-1]:.1f} ms, max {xs[-1]:.1f} ms (n={len(xs)})"

async def ids():
    d = await request(ah, ap, f"GET /api/records?limit=10 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{AUTH}\r\n")
    body = json.loads(d.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[1].rsplit(b"\r\n0", 1)[0]) if b"chunked" in d else json.loads(d.split(b"\r\n\r\n", 1)[1])
    return {r["url"].rsplit("/", 1)[1]: r["id"] for r in body["records"]}

async def peak_while(coro_fn, seconds):
    idle = rss_kib(); peak = idle
    task = asyncio.ensure_future(coro_fn())
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_kib()); await asyncio.sleep(0.05)
    task.cancel()
    try: await task
    except BaseException: pass
    return idle, peak

async def main():
    rec = await ids()
    base = summary([await health_ms() for _ in range(50)])
    print(f"A0 /api/health, quiet: {base}")

    # A: 1,000 SSE readers + 1,000 idle admin connections.
    conns, sse_status = [], {}
    for i in range(1000):
        r, w = await asyncio.open_connection(ah, int(ap))
        w.write(f"GET /api/records/live HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}\r\n".encode())
        conns.append((r, w))
    for r, w in conns:
        try:
            line = await asyncio.wait_for(r.readline(), 5)
            code = line.split()[1].decode() if line else "closed"
        except Exception: code = "timeout"
        sse_status[code] = sse_status.get(code, 0) + 1
    idle = []
    for i in range(1000):
        try: idle.append(await asyncio.open_connection(ah, int(ap)))
        except OSError as e: print("idle connect failed:", e); break
    await asyncio.sleep(0.5)
    lat = [await health_ms() for _ in range(50)]
    print(f"A  /api/health with 1,000 SSE readers ({sse_status}) and {len(idle)} idle connections open: {summary(lat)}")
    for r, w in conns + idle: w.close()
    await asyncio.sleep(1)

    # B: 40 stalled readers of the 25 MB record (20 detail, 20 raw body).
    big = rec["big"]
    async def stalled():
        held = []
        for i in range(40):
            r, w = await asyncio.open_connection(ah, int(ap))
            path = f"/api/records/{big}" if i % 2 == 0 else f"/api/records/{big}/body/response"
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH}\r\n".encode())
            held.append(w)
        await asyncio.sleep(3600)
    idle_kib, peak_kib = await peak_while(stalled, 15)
    print(f"B  40 stalled readers of a 25 MB record: RSS idle {idle_kib/1024:.1f} MiB, peak {peak_kib/1024:.1f} MiB, over idle {(peak_kib-idle_kib)/1024:.1f} MiB")
    await asyncio.sleep(12)

    # C: 8 concurrent ?decode=1 downloads, read in full; proxy latency meanwhile.
    gz = rec["gz"]
    async def decode_all():
        async def one():
            try: return len(await request(ah, ap, f"GET /api/records/{gz}/body/response?decode=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{AUTH}\r\n", 60))
            except Exception as e: return repr(e)
        return await asyncio.gather(*[one() for _ in range(8)])
    proxy_lat = []
    async def with_proxy():
        t = asyncio.ensure_future(decode_all())
        while not t.done():
            t0 = time.perf_counter()
            await request(ph, pp, f"GET http://{origin}/small HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
            proxy_lat.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.02)
        print(f"   decode results (bytes or error): {await t}")
    idle_kib, peak_kib = await peak_while(with_proxy, 25)
    print(f"C  8 concurrent ?decode=1: RSS idle {idle_kib/1024:.1f} MiB, peak {peak_kib/1024:.1f} MiB, over idle {(peak_kib-idle_kib)/1024:.1f} MiB")
    if proxy_lat: print(f"   proxy /small meanwhile: {summary(proxy_lat)}")

asyncio.run(main())
PY
