#!/usr/bin/env bash
# Profiles sluice on A's workload (wrk -c50 GET /small through the forward
# proxy, or /big with --big) with perf's call graphs, pinned like run.sh:
# wrk and nginx on core 0, sluice on core 1.
#
#   bench/profile.sh [--record on|off] [--big] [--secs N] [--bin PATH]
#
# Prints the top entries by self time (perf report --no-children) and the
# throughput wrk saw while perf was sampling; the raw perf.data and report
# stay in bench/out/profile-<record>[-big]/. Uses the software cpu-clock
# event, so it works on machines without hardware counters. Every process it
# starts is killed by PID at exit.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RECORD=on BIG=0 SECS=8 BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --record) RECORD="$2"; shift 2 ;;
    --big) BIG=1; shift ;;
    --secs) SECS="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
for t in wrk nginx perf taskset; do command -v "$t" >/dev/null || { echo "$t is missing" >&2; exit 1; }; done
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --bin sluice >&2)
  BIN="$ROOT/target/release/sluice"
fi
SUFFIX=""; [ "$BIG" = 1 ] && SUFFIX=-big
OUT="$ROOT/bench/out/profile-$RECORD$SUFFIX"
BIN="$(realpath "$BIN")"
rm -rf "$OUT"; mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/sluice-profile.XXXXXX)"; chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_NGINX=$(free_port); P_SLUICE=$(free_port); P_ADMIN=$(free_port)
mkdir -p "$WORK/www" "$WORK/nginx"
head -c 100 /dev/zero | tr '\0' a >"$WORK/www/small"
head -c 1048576 /dev/urandom >"$WORK/www/big"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn; events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000000;
  client_body_temp_path $WORK/nginx/b; proxy_temp_path $WORK/nginx/p; fastcgi_temp_path $WORK/nginx/f;
  uwsgi_temp_path $WORK/nginx/u; scgi_temp_path $WORK/nginx/s;
  server { listen 127.0.0.1:$P_NGINX; root $WORK/www; location / { } } }
EOF
taskset -c 0 nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)
args=(--listen "127.0.0.1:$P_SLUICE" --log-level warn --workers 1 --admin "127.0.0.1:$P_ADMIN" --data-dir "$WORK/data")
[ "$RECORD" = off ] && args+=(--record off)
taskset -c 1 "$BIN" "${args[@]}" >"$OUT/sluice.log" 2>&1 &
SLUICE_PID=$!; PIDS+=("$SLUICE_PID")
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$P_SLUICE/" 2>/dev/null && break; sleep 0.1; done
path=/small conns=50
[ "$BIG" = 1 ] && path=/big conns=10
cat >"$WORK/proxy.lua" <<EOF
wrk.path = "http://127.0.0.1:$P_NGINX$path"
EOF
# Warm-up, then the profiled run.
timeout 30 taskset -c 0 wrk -t1 -c"$conns" -d2s -s "$WORK/proxy.lua" "http://127.0.0.1:$P_SLUICE" >/dev/null
timeout 60 perf record -e cpu-clock -F 4000 --call-graph dwarf,16384 -p "$SLUICE_PID" -o "$OUT/perf.data" -- sleep "$SECS" 2>"$OUT/perf-record.err" &
PERF=$!
timeout $((SECS + 20)) taskset -c 0 wrk -t1 -c"$conns" -d"${SECS}s" -s "$WORK/proxy.lua" "http://127.0.0.1:$P_SLUICE" | tee "$OUT/wrk.txt" | grep -E "Requests/sec|Transfer/sec"
wait "$PERF" || true
grep -E "VmRSS|RssAnon|RssFile" "/proc/$SLUICE_PID/status" | tr -s ' ' | tee "$OUT/rss.txt"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 -g none 2>/dev/null \
  | grep -v "^#" | grep -v "^$" | sed "s/  *-  *-  *$//" | tee "$OUT/top.txt" | head -45
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
