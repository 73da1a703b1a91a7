#!/usr/bin/env bash
# sluice inventory benchmark: how long GET /api/connections takes with
# ~10,000 live connections, and whether reading it stalls proxying.
#
#   bench/inventory.sh                 10,000 live connections, wrk runs of 10 s
#   bench/inventory.sh --quick         2,000 live connections, wrk runs of 3 s
#   bench/inventory.sh --conns N       N live connections
#
# Steps: build sluice (working tree) and bench/loadgen; start nginx (origin),
# the loadgen echo server and sluice (--workers 1, pinned to core 1; load
# and origins on core 0); time the inventory with no traffic; open the live
# connections with `loadgen hold` (CONNECT tunnels, plus idle proxy
# connections when the descriptor limit cannot hold two sockets per
# tunnel); time GET /api/connections (median of 5), /api/sockets and
# /metrics; then wrk through the proxy (100-byte answers, 50 keep-alive
# connections) with no inventory reader, with a reader every 200 ms, with
# a control reader (same-size file from nginx every 200 ms) and with a
# reader in a tight loop, each twice, interleaved. Every loop is
# bounded; every process started here is killed by PID on exit.
#
# Keepalive probes are pushed past the run (--keepalive-idle 20m): ten
# thousand sockets opened in one burst probe in bursts too, and on loopback
# a burst of 20,000 probes overflows the per-CPU backlog
# (net.core.netdev_max_backlog, 1000 here), so probes are dropped, peers
# are declared dead (TCP_USER_TIMEOUT) and the drops distort latency.
# Output: Markdown on stdout and in bench/out/inventory.md, raw logs in
# bench/out/inventory-logs/.
set -euo pipefail

CMDLINE="bench/inventory.sh${*:+ $*}"
CONNS=10000
DUR=10
REPEAT=2
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) CONNS=2000; DUR=3 ;;
    --conns) shift; CONNS="${1:?--conns needs a number}" ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "inventory.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="$HERE/out"
LOGS="$OUT/inventory-logs"
LOADGEN_CPU=0
PROXY_CPU=1
WRK_CONNS=50

log() { printf '[inventory %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PIDS=()
WORK=""
LAST_PID=""
start_bg() { # NAME CMD...; sets LAST_PID
  local name="$1"; shift
  "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
stop_pid() { # PID: TERM, then KILL after 5 s
  local pid="$1" i
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done
  [ -n "$WORK" ] && [ -d "$WORK" ] && { cp -f "$WORK/nginx/error.log" "$LOGS/nginx-error.log" 2>/dev/null || true; rm -rf "$WORK"; }
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
kv() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }

for tool in wrk nginx curl taskset cargo; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || die "$tool is missing"
done
export PATH="$PATH:/usr/sbin:/sbin"
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (core 0 for load, core 1 for the proxy)"

# Each tunnel costs sluice two descriptors, an idle proxy connection one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
RESERVE=$((WRK_CONNS * 2 + 400))
if [ "$NOFILE" = unlimited ] || [ $((CONNS * 2 + RESERVE)) -le "$NOFILE" ]; then
  TUNNELS=$CONNS
else
  TUNNELS=$(( NOFILE - RESERVE - CONNS ))
  [ "$TUNNELS" -gt 0 ] || die "ulimit -n $NOFILE cannot hold $CONNS connections"
fi
IDLE_HTTP=$((CONNS - TUNNELS))
[ "$IDLE_HTTP" -gt 0 ] && log "ulimit -n is $NOFILE (hard limit): $TUNNELS tunnels + $IDLE_HTTP idle proxy connections = $CONNS live"

mkdir -p "$OUT"; rm -rf "$LOGS"; mkdir -p "$LOGS"
WORK="$(mktemp -d /tmp/sluice-inventory.XXXXXX)"
chmod 755 "$WORK"

log "building sluice (release) and loadgen"
(cd "$ROOT" && timeout 1800 cargo build --release --bin sluice >&2) || die "cargo build failed"
cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice" "$WORK/sluice"
SLUICE="$WORK/sluice"
(cd "$HERE/loadgen" && CARGO_TARGET_DIR="$HERE/loadgen/target" timeout 900 cargo build --release >&2) || die "loadgen build failed"
LOADGEN="$HERE/loadgen/target/release/loadgen"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null)" ] && GIT_REV="$GIT_REV + uncommitted changes"

# From here this shell and everything it starts (curl, readers) run on the
# load core; sluice is pinned to the proxy core explicitly.
taskset -pc "$LOADGEN_CPU" $$ >/dev/null

read -r P_NGINX P_ECHO P_PROXY P_ADMIN <<<"$("$LOADGEN" ports 4)"
ORIGIN="127.0.0.1:$P_NGINX"; ECHO="127.0.0.1:$P_ECHO"
PROXY="127.0.0.1:$P_PROXY"; ADMIN="127.0.0.1:$P_ADMIN"

mkdir -p "$WORK/www" "$WORK/nginx"
head -c 100 /dev/zero | tr '\0' 'a' >"$WORK/www/small"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 4096;
events { worker_connections 2048; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server { listen $ORIGIN backlog=4096; root $WORK/www; location / { } }
}
EOF
start_bg nginx taskset -c "$LOADGEN_CPU" nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
start_bg echo taskset -c "$LOADGEN_CPU" "$LOADGEN" serve --echo "$ECHO"
SLUICE_CMD=(taskset -c "$PROXY_CPU" "$SLUICE" --listen "$PROXY" --admin "$ADMIN" --workers 1 --log-level warn,sluice::conn=info
  --max-connections $((CONNS + 1000)) --header-timeout 30m --client-idle-timeout 30m --idle-timeout 30m
  --keepalive-idle 20m)
start_bg sluice "${SLUICE_CMD[@]}"
SLUICE_PID=$LAST_PID
for a in "$ORIGIN" "$ECHO" "$PROXY" "$ADMIN"; do "$LOADGEN" wait-port "$a" 20000 || die "$a did not start (see $LOGS)"; done

# Times one admin GET: "seconds bytes" (curl's own clock, connect included).
admin_time() { timeout 60 curl -s -o /dev/null -w '%{time_total} %{size_download} %{http_code}\n' "http://$ADMIN$1"; }
time_median() { # PATH -> "median_ms bytes" over 5 reads
  local i line ms=() bytes=0 code
  for i in 1 2 3 4 5; do
    line="$(admin_time "$1")"
    code="${line##* }"; [ "$code" = 200 ] || die "GET $1 answered $code"
    ms+=("$(awk -v s="${line%% *}" 'BEGIN{printf "%.2f", s*1000}')")
    bytes="$(echo "$line" | cut -d' ' -f2)"
    echo "GET $1: ${ms[-1]} ms, $bytes bytes" >>"$LOGS/admin-times.txt"
  done
  echo "$(printf '%s\n' "${ms[@]}" | median) $bytes"
}
live_count() { timeout 30 curl -s "http://$ADMIN/api/connections?limit=0" | sed -n 's/.*"count":\([0-9]*\).*/\1/p'; }

log "inventory with no traffic"
read -r EMPTY_MS EMPTY_BYTES <<<"$(time_median /api/connections)"
RSS0=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SLUICE_PID/status")

log "opening $TUNNELS tunnels + $IDLE_HTTP idle proxy connections"
start_bg hold taskset -c "$LOADGEN_CPU" "$LOADGEN" hold --target "$ECHO" --proxy "$PROXY" \
  --tunnels "$TUNNELS" --idle-http "$IDLE_HTTP" --secs 900
HOLD_PID=$LAST_PID
for i in $(seq 1200); do
  grep -q '^RESULT ' "$LOGS/hold.out" 2>/dev/null && break
  kill -0 "$HOLD_PID" 2>/dev/null || die "loadgen hold failed: $(tail -n 3 "$LOGS/hold.err")"
  sleep 0.25
done
HOLD_LINE="$(grep '^RESULT ' "$LOGS/hold.out" || true)"
[ -n "$HOLD_LINE" ] || die "connections not open after 300 s"
LIVE=0
for i in $(seq 100); do
  LIVE="$(live_count)"; [ "${LIVE:-0}" -ge "$CONNS" ] && break; sleep 0.1
done
RSS1=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SLUICE_PID/status")
log "$LIVE live connections in the inventory (opened in $(kv open_secs "$HOLD_LINE") s)"

log "timing the inventory (median of 5)"
read -r FULL_MS FULL_BYTES <<<"$(time_median /api/connections)"
read -r TUN_MS _ <<<"$(time_median '/api/connections?kind=tunnel&min_idle=1s&limit=10')"
read -r SOCK_MS _ <<<"$(time_median /api/sockets)"
# The control reader fetches a file of the inventory's size from nginx: the
# same client-side work on the load core, none in sluice.
head -c "$FULL_BYTES" /dev/zero >"$WORK/www/blob"
read -r MET_MS _ <<<"$(time_median /metrics)"

# wrk through the proxy, with a Lua done() hook printing p50/p99.
cat >"$WORK/wrk.lua" <<EOF
wrk.path = "http://$ORIGIN/small"
wrk.headers["Host"] = "$ORIGIN"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
run_wrk() { # SECS NAME -> RESULT line
  timeout -k 5 $(( $1 + 60 )) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$WRK_CONNS" -d"$1s" --latency -s "$WORK/wrk.lua" "http://$PROXY/" >"$LOGS/$2.txt" 2>&1 || true
  grep '^RESULT ' "$LOGS/$2.txt" | tail -n1
}
# Reads URL until SECS pass: every PAUSE seconds (0 = tight loop). The
# client runs at nice 19 on the load core, so that receiving 2.6 MB takes
# as little as possible from wrk and nginx there (the control row checks).
reader() { # SECS PAUSE NAME URL
  local end=$(( $(date +%s) + $1 )) n=0
  while [ "$(date +%s)" -lt "$end" ] && [ "$n" -lt 100000 ]; do
    nice -n 19 timeout 30 curl -s -o /dev/null "$4" || true
    n=$((n + 1))
    [ "$2" = 0 ] || sleep "$2"
  done
  echo "$n" >"$LOGS/$3.reads"
}

declare -A P99 RPS ERR READS
log "warm-up"
run_wrk 1 warmup >/dev/null
for r in $(seq "$REPEAT"); do
  for mode in none every200ms control200ms tight; do
    name="wrk-$mode-$r"
    rpid=""
    case "$mode" in
      every200ms) reader "$((DUR + 1))" 0.2 "$name" "http://$ADMIN/api/connections" & rpid=$! ;;
      control200ms) reader "$((DUR + 1))" 0.2 "$name" "http://$ORIGIN/blob" & rpid=$! ;;
      tight) reader "$((DUR + 1))" 0 "$name" "http://$ADMIN/api/connections" & rpid=$! ;;
    esac
    [ -n "$rpid" ] && PIDS+=("$rpid")
    log "wrk ${DUR}s, inventory reader: $mode (run $r)"
    line="$(run_wrk "$DUR" "$name")"
    if [ -n "$rpid" ]; then
      # The reader stops by itself one second after wrk; kill it only if not.
      for i in $(seq 100); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
      stop_pid "$rpid"
    fi
    [ -n "$line" ] || { log "wrk gave no result, see $LOGS/$name.txt"; continue; }
    P99[$mode]="${P99[$mode]:-} $(kv p99_us "$line")"
    RPS[$mode]="${RPS[$mode]:-} $(awk -v n="$(kv requests "$line")" -v d="$(kv duration_us "$line")" 'BEGIN{printf "%.0f", n/(d/1e6)}')"
    ERR[$mode]=$(( ${ERR[$mode]:-0} + $(kv errors "$line") ))
    READS[$mode]="${READS[$mode]:-} $(cat "$LOGS/$name.reads" 2>/dev/null || echo 0)"
    echo "$mode run $r: $line reads=$(cat "$LOGS/$name.reads" 2>/dev/null || echo 0) live_after=$(live_count)" >>"$LOGS/runs.txt"
  done
done
STILL="$(live_count)"
timeout 30 curl -s "http://$ADMIN/metrics" | grep -E '^sluice_connections_(closed|open|accepted)' >"$LOGS/connection-metrics.txt" || true
CLOSED="$(grep '^sluice_connections_closed_total' "$LOGS/connection-metrics.txt" | awk '$2 > 0 {sub(/.*reason="/, "", $1); sub(/".*/, "", $1); printf "%s %s, ", $1, $2}')"
stop_pid "$HOLD_PID"

med() { printf '%s\n' $1 | median; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b==0 || a=="n/a" || b=="n/a") print "n/a"; else printf "%+.1f%%", (a-b)/b*100 }'; }
B99=$(med "${P99[none]:-}")
report() {
  echo "# sluice inventory benchmark"
  echo
  echo "- command: \`$CMDLINE\` ($(date -u '+%Y-%m-%d %H:%M UTC')), commit $GIT_REV"
  echo "- sluice: \`taskset -c $PROXY_CPU sluice --workers 1 --log-level warn,sluice::conn=info --max-connections $((CONNS + 1000)) --header-timeout 30m --client-idle-timeout 30m --idle-timeout 30m --keepalive-idle 20m\`; loadgen, curl, wrk and nginx on core $LOADGEN_CPU"
  echo "- live connections: $LIVE in the inventory ($TUNNELS CONNECT tunnels to an echo server + $IDLE_HTTP idle proxy connections; ulimit -n $NOFILE); still $STILL after the wrk runs"
  echo "- connections closed during the whole run, by reason: ${CLOSED:-none}"
  echo "- sluice RSS: $RSS0 KiB before, $RSS1 KiB with the connections open"
  echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "## Reading the inventory (curl time_total, median of 5)"
  echo
  echo "| request | live connections | time | answer size |"
  echo "|---|---:|---:|---:|"
  echo "| GET /api/connections | 0 | $EMPTY_MS ms | $EMPTY_BYTES B |"
  echo "| GET /api/connections | $LIVE | **$FULL_MS ms** | $FULL_BYTES B |"
  echo "| GET /api/connections?kind=tunnel&min_idle=1s&limit=10 | $LIVE | $TUN_MS ms | |"
  echo "| GET /api/sockets | $LIVE | $SOCK_MS ms | |"
  echo "| GET /metrics | $LIVE | $MET_MS ms | |"
  echo
  echo "## Proxied requests while the inventory is read (\`wrk -t1 -c$WRK_CONNS -d${DUR}s\`, GET 100 B via the proxy, median of $REPEAT)"
  echo
  echo "| inventory reader | requests/s | p99 latency | p99 vs no reader | inventory reads | errors |"
  echo "|---|---:|---:|---:|---:|---:|"
  for mode in none every200ms control200ms tight; do
    local p r
    p=$(med "${P99[$mode]:-}"); r=$(med "${RPS[$mode]:-}")
    echo "| $mode | $r | $(awk -v v="$p" 'BEGIN{ if (v=="n/a") print v; else printf "%.2f ms", v/1000 }') | $(pct "$p" "$B99") | $(echo ${READS[$mode]:-}) | ${ERR[$mode]:-0} |"
  done
  echo
  echo "Readers: \`every200ms\` and \`tight\` GET /api/connections (all $LIVE rows); \`control200ms\` GETs a file of the same size from nginx every 200 ms, so its row shows what the reading client alone costs on the shared load core. Readers run at nice 19."
  echo
  echo "Every run: bench/out/inventory-logs/runs.txt; single admin timings: admin-times.txt."
}
report | tee "$OUT/inventory.md"
