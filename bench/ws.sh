#!/usr/bin/env bash
# WebSocket benchmark: the loadgen WebSocket server (tokio-tungstenite) and
# clients, direct and through sluice's forward path (absolute-form
# upgrade, as a browser with an HTTP proxy sends for ws://), sluice with
# its defaults (recording every message) and with --record off.
#
#   bench/ws.sh [--bin PATH] [--secs S] [--runs N] [--soak-total N]
#
# 1. echo: 50 connections, 64-byte binary messages, one in flight each
#    (messages/s counts echoes: each is two messages through the proxy);
# 2. bulk: one connection, 4 GiB as 64 KiB binary messages downstream;
# 3. soak: a fresh sluice, recording on; 50 clients echo N (default
#    500,000) 64-byte messages, 5,000 per connection (10,000 recorded
#    messages, the per-connection budget) so every message is stored:
#    1,000,000 recorded messages; the proxy's RSS at the start and every
#    tenth, and the store's message rows at the end.
# Echo and bulk alternate direct / recording on / off, median of --runs
# (default 5). Load generator and server on core 0, the proxy on core 1.
# Output: a Markdown table on stdout and in bench/out/ws.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$HERE/../target/release/sluice"
SECS=10
RUNS=5
SOAK=500000
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --secs) SECS="$2"; shift ;;
    --soak-total) SOAK="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    *) echo "ws.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$BIN" ] || (cd "$HERE/.." && cargo build --release >&2)
(cd "$HERE/loadgen" && cargo build --release -q >&2)
LG="$HERE/loadgen/target/release/loadgen"
mkdir -p "$HERE/out"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
read -r WS_PORT SP_ON AP_ON SP_OFF AP_OFF SP AP <<<"$("$LG" ports 7)"
WS="127.0.0.1:$WS_PORT"

taskset -c 0 "$LG" ws-serve --addr "$WS" & PIDS+=($!)
"$LG" wait-port "$WS"

start_sluice() { # LISTEN-PORT ADMIN-PORT DATA-DIR EXTRA-ARGS... ; sets SLUICE_PID
  taskset -c 1 "$BIN" --listen "127.0.0.1:$1" --admin "127.0.0.1:$2" --workers 1 \
    --data-dir "$3" --log-level warn "${@:4}" >"$WORK/sluice-$1.out" 2>&1 &
  SLUICE_PID=$!
  PIDS+=($SLUICE_PID)
  "$LG" wait-port "127.0.0.1:$1"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
echo_run() { # PROXY-ARGS... -> RESULT line
  timeout $((SECS + 30)) taskset -c 0 "$LG" ws-echo --target "$WS" "$@" --conc 50 --secs "$SECS" --msg 64
}
bulk_run() {
  timeout 120 taskset -c 0 "$LG" ws-bulk --target "$WS" "$@" --bytes $((4 << 30)) --size 65536
}
rss() { awk '/^VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }
median() { python3 -c "import sys,statistics; v=[float(x) for x in sys.argv[1:] if x]; print(f'{statistics.median(v):.1f}' if v else '')" "$@"; }

# Both instances run side by side (one loaded at a time) and the three
# configurations alternate, so a machine that drifts moves them alike.
start_sluice "$SP_ON" "$AP_ON" "$WORK/data-on"; PID_ON=$SLUICE_PID
start_sluice "$SP_OFF" "$AP_OFF" "$WORK/data-off" --record off; PID_OFF=$SLUICE_PID
declare -A ARGS=([direct]="" [on]="--proxy 127.0.0.1:$SP_ON" [off]="--proxy 127.0.0.1:$SP_OFF")
declare -A EPS EP99 BMB
for i in $(seq "$RUNS"); do
  for k in direct on off; do
    # shellcheck disable=SC2086
    line=$(echo_run ${ARGS[$k]})
    EPS[$k]+=" $(echo "$line" | field per_s)"; EP99[$k]+=" $(echo "$line" | field p99_us)"
    # shellcheck disable=SC2086
    BMB[$k]+=" $(bulk_run ${ARGS[$k]} | field mb_per_s)"
  done
done
RSS_ON=$(rss "$PID_ON")
kill "$PID_ON" "$PID_OFF"; wait "$PID_ON" "$PID_OFF" 2>/dev/null || true

# Soak: 1,000,000 recorded messages into a fresh store.
start_sluice "$SP" "$AP" "$WORK/data-soak"
sleep 1
SOAK_LINE=$(timeout 900 taskset -c 0 "$LG" ws-echo --target "$WS" --proxy "127.0.0.1:$SP" \
  --conc 50 --secs 600 --msg 64 --per-conn 5000 --total "$SOAK" --pid "$SLUICE_PID")
sleep 3 # the recorder's batch window, then the last sample
RSS_END=$(rss "$SLUICE_PID")
TOKEN=$(cat "$WORK/data-soak/admin.token")
METRICS=$(curl -s --max-time 5 -H @<(printf 'Authorization: Bearer %s\n' "$TOKEN") "http://127.0.0.1:$AP/metrics" | grep '^sluice_record_messages_total' | tr '\n' ' ')
kill "$SLUICE_PID"; wait "$SLUICE_PID" 2>/dev/null || true
STORED=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select coalesce(sum(count), 0) from message_chunks').fetchone()[0])" "$WORK/data-soak/records.db")

ratio() { python3 -c "import sys; a,b=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'{a/b:.2f}x' if b else 'n/a')" "$1" "$2"; }
# shellcheck disable=SC2086
per_s() { median ${EPS[$1]}; }
# shellcheck disable=SC2086
p99() { median ${EP99[$1]}; }
# shellcheck disable=SC2086
mbs() { median ${BMB[$1]}; }
samples=$(echo "$SOAK_LINE" | field rss_kib)
first=${samples%%,*}; first=${first#*:}
{
  echo "## WebSocket: direct vs sluice ($(date -u +%F), $(nproc) cores; loadgen on core 0, proxy on core 1; median of $RUNS alternating runs, ${SECS} s echo each)"
  echo
  echo "| figure | direct | sluice (recording on) | sluice --record off |"
  echo "|---|---:|---:|---:|"
  echo "| echo, 64-byte messages, 50 conns (echoes/s) | $(per_s direct) | $(per_s on) ($(ratio "$(per_s on)" "$(per_s direct)")) | $(per_s off) ($(ratio "$(per_s off)" "$(per_s direct)")) |"
  echo "| echo p99 (µs) | $(p99 direct) | $(p99 on) | $(p99 off) |"
  echo "| bulk, 4 GiB as 64 KiB messages (MB/s) | $(mbs direct) | $(mbs on) ($(ratio "$(mbs on)" "$(mbs direct)")) | $(mbs off) ($(ratio "$(mbs off)" "$(mbs direct)")) |"
  echo
  echo "Runs (echoes/s): direct${EPS[direct]}; on${EPS[on]}; off${EPS[off]}. Bulk (MB/s): direct${BMB[direct]}; on${BMB[on]}; off${BMB[off]}."
  echo
  echo "RSS after the echo and bulk runs, recording on: ${RSS_ON} MiB."
  echo
  echo "Soak: $(echo "$SOAK_LINE" | field ok) echoes ($((2 * SOAK)) messages through the proxy, errors $(echo "$SOAK_LINE" | field errors)) in $(echo "$SOAK_LINE" | field secs) s; message rows in the store: $STORED; $METRICS"
  echo "RSS (MiB) by echoes done: $(echo "$samples" | tr ',' '\n' | awk -F: '{printf "%s%d: %d", sep, $1, $2/1024; sep=", "}'); after the batch window: $RSS_END MiB; growth from the start: $((RSS_END - first / 1024)) MiB."
} | tee "$HERE/out/ws.md"
