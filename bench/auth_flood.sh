#!/usr/bin/env bash
# Proxy-auth flood: authenticated latency while clients guess passwords.
#
# Usage: bench/auth_flood.sh [SLUICE_BINARY] [SECONDS_PER_PHASE]
#   SLUICE_BINARY defaults to target/release/sluice (build it first);
#   SECONDS_PER_PHASE defaults to 10 (bounded to 60).
#
# Steps: writes an auth file with one cost-12 bcrypt user (python3's crypt
# module, libxcrypt), starts a tiny keep-alive HTTP origin (python3
# asyncio) and sluice --auth in front of it, then for each phase sends
# sequential authenticated keep-alive GETs through the proxy and prints
# p50/p99/max:
#   idle   no other traffic
#   flood  8 more clients, each sending a new wrong password for the same
#          user in a loop (fresh connection per guess)
# Prints one `RESULT phase=... n=... p50_ms=... p99_ms=... max_ms=...` line
# per phase, plus the flood's answer counts. Every process it starts is
# stopped by PID on exit.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${1:-$HERE/../target/release/sluice}"
SECS="${2:-10}"
if (( SECS > 60 )); then SECS=60; fi
[[ -x "$BIN" ]] || { echo "auth_flood: no sluice binary at $BIN" >&2; exit 2; }

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PASSWORD="bench-password-$$"
python3 -W ignore - "$PASSWORD" >"$WORK/users" <<'EOF'
import crypt, sys, secrets, string
alphabet = "./" + string.ascii_letters + string.digits
salt = "$2b$12$" + "".join(secrets.choice(alphabet) for _ in range(21)) + "."
print("alice:" + crypt.crypt(sys.argv[1], salt))
EOF

cat >"$WORK/bench.py" <<'EOF'
import asyncio, base64, socket, sys, time, threading

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 100

async def origin(port):
    async def handle(r, w):
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                if not head:
                    return
                w.write(RESPONSE)
                await w.drain()
        except Exception:
            pass
        finally:
            w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", port)
    async with srv:
        await srv.serve_forever()

def basic(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

def read_answer(f):
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if not line:
            raise EOFError("closed")
        if line in (b"\r\n", b"\n"):
            break
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    f.read(length)
    return int(status.split()[1])

def measure(proxy, origin_port, auth, secs, out):
    s = socket.create_connection(("127.0.0.1", proxy), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    req = (f"GET http://127.0.0.1:{origin_port}/small HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n"
           f"Proxy-Authorization: {auth}\r\n\r\n").encode()
    # Warm: the first request pays bcrypt once.
    s.sendall(req); assert read_answer(f) == 200
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.perf_counter()
        s.sendall(req)
        st = read_answer(f)
        out.append(((time.perf_counter() - t) * 1000, st))
        time.sleep(0.002)
    s.close()

def flood(proxy, origin_port, i, stop, counts):
    n = 0
    while not stop.is_set():
        n += 1
        auth = basic("alice", f"guess-{i}-{n}")
        req = (f"GET http://127.0.0.1:{origin_port}/small HTTP/1.1\r\nHost: x\r\n"
               f"Proxy-Authorization: {auth}\r\nConnection: close\r\n\r\n").encode()
        try:
            s = socket.create_connection(("127.0.0.1", proxy), timeout=30)
            s.sendall(req)
            st = read_answer(s.makefile("rb"))
            s.close()
        except Exception:
            st = 0
        counts[st] = counts.get(st, 0) + 1

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]

def main():
    mode = sys.argv[1]
    if mode == "origin":
        asyncio.run(origin(int(sys.argv[2])))
        return
    proxy, origin_port, password, secs = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
    auth = basic("alice", password)
    for phase in ("idle", "flood"):
        stop = threading.Event(); counts = {}
        flooders = []
        if phase == "flood":
            flooders = [threading.Thread(target=flood, args=(proxy, origin_port, i, stop, counts), daemon=True) for i in range(8)]
            for t in flooders: t.start()
            time.sleep(1.0)
        out = []
        measure(proxy, origin_port, auth, secs, out)
        stop.set()
        for t in flooders: t.join(timeout=40)
        lat = [ms for ms, st in out if st == 200]
        bad = len(out) - len(lat)
        print(f"RESULT phase={phase} n={len(lat)} non200={bad} p50_ms={pct(lat,0.5):.3f} "
              f"p99_ms={pct(lat,0.99):.3f} max_ms={max(lat):.3f}"
              + (" flood_answers=" + ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) if counts else ""),
              flush=True)

main()
EOF

PORTS=($(python3 -c 'import socket
for _ in range(2):
    s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'))
ORIGIN=${PORTS[0]}; PROXY=${PORTS[1]}

python3 "$WORK/bench.py" origin "$ORIGIN" &
PIDS+=($!)
"$BIN" --listen "127.0.0.1:$PROXY" --admin off --data-dir :memory: --auth "$WORK/users" \
  2>"$WORK/sluice.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q "sluice listening" "$WORK/sluice.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "sluice listening" "$WORK/sluice.log" || { echo "auth_flood: sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1; }

echo "binary: $BIN ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
timeout $((SECS * 2 + 90)) python3 "$WORK/bench.py" client "$PROXY" "$ORIGIN" "$PASSWORD" "$SECS"
