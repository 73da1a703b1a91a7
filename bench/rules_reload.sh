#!/usr/bin/env bash
# Reload of a 5,000-rule file under load (issue 5 target: under 50 ms, no
# connection dropped).
#
#   bench/rules_reload.sh [ROUNDS]     (default 40 SIGHUP reloads)
#
# Starts the release binary with --rules (the file examples/rules_bench.rs
# generates), nginx as the origin and an echo server, opens 100 CONNECT
# tunnels to the echo server, sends 10 SIGHUPs with no load, then runs wrk
# (-c50, keep-alive) through sluice while sending SIGHUP every 250 ms.
# Prints the reload times as sluice logs them ("rules reloaded ... ms=")
# for the quiet and the loaded reloads, wrk's errors and non-2xx
# answers, whether every tunnel still echoes after the reloads, and five
# PUT /api/rules round trips. Load on core 0, sluice on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-40}
command -v wrk >/dev/null && command -v nginx >/dev/null && command -v curl >/dev/null ||
  { echo "needs wrk, nginx and curl (apt-get install wrk nginx curl)" >&2; exit 2; }
cargo build --release --quiet --bin sluice --example rules_bench
dir=$(mktemp -d /tmp/sluice-reload.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

read -r P_NGINX P_ECHO P_PROXY P_ADMIN <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"

./target/release/examples/rules_bench 5000 --print >"$dir/rules.txt"
mkdir -p "$dir/www"
head -c 100 /dev/zero | tr '\0' a >"$dir/www/small"
cat >"$dir/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off;
pid $dir/nginx.pid; error_log $dir/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$P_NGINX; root $dir/www; } }
EOF
taskset -c 0 nginx -c "$dir/nginx.conf" -p "$dir" 2>"$dir/nginx.out" &
pids+=($!)
taskset -c 0 python3 - "$P_ECHO" <<'EOF' &
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(512)
def echo(c):
    with c:
        while (d := c.recv(65536)):
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
EOF
pids+=($!)
taskset -c 1 ./target/release/sluice --listen "127.0.0.1:$P_PROXY" --admin "127.0.0.1:$P_ADMIN" \
  --data-dir :memory: --record off --workers 1 --rules "$dir/rules.txt" --log-level info 2>"$dir/log" &
sluice=$!
pids+=("$sluice")
for _ in $(seq 100); do grep -q "sluice listening" "$dir/log" && break; sleep 0.1; done
sleep 0.3

# 100 tunnels held open across the reloads, checked afterwards.
python3 - "$P_PROXY" "$P_ECHO" "$dir/tunnels.out" <<'EOF' &
import socket, sys, time
proxy, echo, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ts = []
for i in range(100):
    c = socket.create_connection(("127.0.0.1", proxy), timeout=10)
    c.sendall(f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nHost: 127.0.0.1:{echo}\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = c.recv(1)
        if not b: break
        head += b
    ts.append(c)
time.sleep(13)
ok = 0
for i, c in enumerate(ts):
    try:
        msg = f"tunnel {i}".encode(); c.sendall(msg)
        got = b""
        while len(got) < len(msg):
            b = c.recv(64)
            if not b: break
            got += b
        ok += got == msg
    except OSError:
        pass
open(out, "w").write(f"{ok}\n")
EOF
tunnels=$!
sleep 1
QUIET=10
for _ in $(seq "$QUIET"); do
  kill -HUP "$sluice"
  sleep 0.1
done
cat >"$dir/wrk.lua" <<EOF
wrk.path = "http://127.0.0.1:$P_NGINX/small"
wrk.headers["Host"] = "127.0.0.1:$P_NGINX"
done = function(s, l, r)
  local e = s.errors
  io.write(string.format("RESULT requests=%d errors=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    s.requests, e.connect + e.read + e.write + e.status + e.timeout, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
taskset -c 0 wrk -t1 -c50 -d11s -s "$dir/wrk.lua" "http://127.0.0.1:$P_PROXY/" >"$dir/wrk.out" 2>&1 &
wrk=$!
sleep 0.5
for _ in $(seq "$ROUNDS"); do
  kill -HUP "$sluice"
  sleep 0.25
done
wait "$wrk" || true
wait "$tunnels" || true

echo "rules in the file: $(grep -cv '^#' "$dir/rules.txt")"
stats() { # LABEL; reload times (ms) on stdin
  sort -n | awk -v label="$1" '{ v[NR] = $1 } END { if (NR == 0) { print label ": none logged"; exit }
    printf "%s: %d reloads, ms min %.1f median %.1f p90 %.1f max %.1f\n",
      label, NR, v[1], v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR] }'
}
grep "rules reloaded" "$dir/log" | grep -o 'ms=[0-9.]*' | cut -d= -f2 >"$dir/times"
head -n "$QUIET" "$dir/times" | stats "SIGHUP reload, no load"
tail -n +"$((QUIET + 1))" "$dir/times" | stats "SIGHUP reload, wrk saturating the core sluice is pinned to"
echo "wrk during the reloads: $(grep '^RESULT' "$dir/wrk.out" | sed 's/^RESULT //')"
echo "tunnels still echoing after the reloads: $(cat "$dir/tunnels.out" 2>/dev/null || echo '?')/100"
echo "connections closed by sluice with an error: $(grep -c 'connection closed.*reason=error' "$dir/log" || true)"
for _ in 1 2 3 4 5; do
  curl -s -o /dev/null -w 'PUT /api/rules round trip ms=%{time_total}\n' \
    -X PUT --data-binary @"$dir/rules.txt" "http://127.0.0.1:$P_ADMIN/api/rules" |
    awk -F= '{ printf "%s=%.1f\n", $1, $2 * 1000 }'
done
