#!/usr/bin/env bash
# Peak memory (VmHWM growth over a warmed-up idle process) for inputs that
# used to cost gigabytes.
#
# Usage: bench/bounds_rss.sh [SLUICE_BINARY] [RULES]
#   SLUICE_BINARY defaults to target/release/sluice (build it first).
#   RULES: how many `\w{50}` regex rules to validate (default 40; the old
#   build needs ~7 MB each, so keep it small against an old binary).
#
# Inputs, each against a fresh sluice (admin on loopback, records in memory):
#   stacked   one proxied response with `Content-Encoding: zstd` x 3000,
#             then its record view, its body with ?decode=1 and a HAR export
#   regex     POST /api/rules/validate with RULES rules `/^http://hN\.test/\w{50}/`
#   many      POST /api/rules/validate with 3000 rules `/...(?-u:\w){40}x/`
#             (each small, together past the budget)
#   fit       the same with 550 rules: just within the budget, so the whole
#             set (RegexSet included) is compiled
# Prints `RESULT input=... grown_mib=... answer_ms=... detail=...` per input.
# Every process it starts is stopped by PID on exit; each step has a
# timeout.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${1:-$HERE/../target/release/sluice}"
RULES="${2:-40}"
[[ -x "$BIN" ]] || { echo "bounds_rss: no sluice binary at $BIN" >&2; exit 2; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/rss.py" <<'EOF'
import asyncio, json, socket, sys, time, urllib.request, zlib

def hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

def admin(addr, method, path, body=b"", headers=None, timeout=120):
    req = urllib.request.Request(f"http://{addr}{path}", data=body if method != "GET" else None, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read(); status = r.status
    except urllib.error.HTTPError as e:
        data = e.read(); status = e.code
    return status, data, (time.monotonic() - t) * 1000

def proxied(proxy, origin, path):
    s = socket.create_connection(("127.0.0.1", proxy), timeout=60)
    s.sendall(f"GET http://127.0.0.1:{origin}{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()

def main():
    mode, pid, proxy, adm, origin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    ui = {"x-sluice-ui": "1"}
    if mode == "stacked":
        proxied(proxy, origin, "/warm")
        time.sleep(0.5)
        rec = json.loads(admin(adm, "GET", "/api/records?limit=10")[1])["records"]
        admin(adm, "GET", f"/api/records/{rec[0]['id']}")
        admin(adm, "GET", f"/api/records/{rec[0]['id']}/body/response?decode=1")
        admin(adm, "GET", "/api/har")
        before = hwm(pid)
        t = time.monotonic()
        proxied(proxy, origin, "/stacked")
        time.sleep(0.5)
        rec = json.loads(admin(adm, "GET", "/api/records?limit=10")[1])["records"]
        rid = max(r["id"] for r in rec)
        st, d, _ = admin(adm, "GET", f"/api/records/{rid}")
        detail = json.loads(d)["response"]["body"].get("decode_error")
        admin(adm, "GET", f"/api/records/{rid}/body/response?decode=1")
        admin(adm, "GET", "/api/har")
        ms = (time.monotonic() - t) * 1000
    else:
        admin(adm, "POST", "/api/rules/validate", b"/a\\.test/ status://200\n", ui)
        before = hwm(pid)
        n = int(sys.argv[6])
        if mode == "regex":
            text = "".join(f"/^http://h{i}\\.test/\\w{{50}}/ status://200\n" for i in range(n))
        elif mode == "fit":
            text = "".join(f"/^http://m{i}\\.test/(?-u:\\w){{40}}x/ status://200\n" for i in range(550))
        else:
            text = "".join(f"/^http://m{i}\\.test/(?-u:\\w){{40}}x/ status://200\n" for i in range(3000))
        st, d, ms = admin(adm, "POST", "/api/rules/validate", text.encode(), ui)
        try:
            v = json.loads(d)
            e = v["errors"][0] if v.get("errors") else None
            detail = f"valid={v.get('valid')} first_error={e['line']}:{e['column']}:{e['message'][:60]}" if e else f"valid={v.get('valid')}"
        except Exception:
            detail = f"status={st}"
    grown = (hwm(pid) - before) / 1024
    print(f"RESULT input={mode} grown_mib={grown:.1f} answer_ms={ms:.0f} detail={detail!r}", flush=True)

main()
EOF

cat >"$WORK/origin.py" <<'EOF'
import asyncio, sys, zlib
# Not valid zstd: the old build allocates a decoder per listed coding
# before reading a byte, so the content does not matter.
BODY = b"\x28\xb5\x2f\xfd not really a zstd frame"
def answer(path):
    enc = "zstd" if path == "/warm" else ", ".join(["zstd"] * 3000)
    return (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: {enc}\r\n"
            f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n").encode() + BODY
async def handle(r, w):
    try:
        head = await r.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        w.write(answer(path)); await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
EOF

PORTS=($(python3 -c 'import socket
for _ in range(3):
    s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'))
ORIGIN=${PORTS[0]}
python3 "$WORK/origin.py" "$ORIGIN" &
PIDS+=($!)

echo "binary: $BIN ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
for input in stacked regex many fit; do
  PROXY=${PORTS[1]}; ADMIN=${PORTS[2]}
  : >"$WORK/sluice.log"
  "$BIN" --listen "127.0.0.1:$PROXY" --admin "127.0.0.1:$ADMIN" --data-dir :memory: \
    2>"$WORK/sluice.log" &
  SP=$!
  PIDS+=($SP)
  for _ in $(seq 1 100); do
    grep -q "sluice listening" "$WORK/sluice.log" 2>/dev/null && break
    sleep 0.1
  done
  timeout 300 python3 "$WORK/rss.py" "$input" "$SP" "$PROXY" "127.0.0.1:$ADMIN" "$ORIGIN" "$RULES" \
    || echo "RESULT input=$input failed (timeout or error)"
  kill "$SP" 2>/dev/null || true
  wait "$SP" 2>/dev/null || true
done
