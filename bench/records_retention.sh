#!/usr/bin/env bash
# sluice record retention benchmark: does the record store stay under its
# byte limit while large bodies are recorded as fast as sluice can proxy
# them? Target: never more than 5% over the limit.
#
#   bench/records_retention.sh              30 s of load per body size
#   bench/records_retention.sh --quick      8 s of load per body size
#   bench/records_retention.sh --secs N     N s of load per body size
#   bench/records_retention.sh --limit 64MiB  the --retain-bytes under test
#   bench/records_retention.sh --rev HEAD   build a committed revision (git
#                                           archive, target dir bench/out/target-rev)
#                                           instead of the working tree
#
# For each body size (256 KiB, then 1 MiB, random bytes served by nginx):
# a fresh sluice with a fresh --data-dir and --retain-bytes LIMIT (other
# recording flags at their defaults: bodies up to 1 MiB are captured)
# proxies `wrk -t1 -c4` of `GET /<size>` for the given time, while a
# sampler adds up the sizes of records.db (with the segment files of
# records.blobs/) and records.db-wal every 100 ms.
# After the load, once the recorder's queue is empty, /metrics gives the
# records kept and the stored/dropped/retention counters; sluice is then
# stopped and the files measured once more. sluice runs on core 1; nginx,
# wrk and the sampler on core 0. Every process started here is killed by
# PID on exit. Output: Markdown on stdout and in
# bench/out/records_retention.md, raw logs (wrk, /metrics, the samples) in
# bench/out/records-retention-logs/.
set -euo pipefail

CMDLINE="bench/records_retention.sh${*:+ $*}"
SECS=30
LIMIT=64MiB
REV=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) SECS=8 ;;
    --secs) shift; SECS="${1:?--secs needs a number}" ;;
    --limit) shift; LIMIT="${1:?--limit needs a size}" ;;
    --rev) shift; REV="${1:?--rev needs a revision}" ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "records_retention.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="$HERE/out"
LOGS="$OUT/records-retention-logs"
LOADGEN_CPU=0
PROXY_CPU=1
CONNS=4
SIZES=(256k 1m)
SAMPLE_EVERY=0.1
TOLERANCE_PCT=5

log() { printf '[records-retention %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PIDS=()
WORK=""
LAST_PID=""
start_bg() { # NAME CMD...; sets LAST_PID (stdout logged with sluice's admin token masked)
  local name="$1"; shift
  "$@" > >(sed -u 's/token=[^[:space:]&]*/token=<hidden>/g' >"$LOGS/$name.out") 2>"$LOGS/$name.err" &
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

export PATH="$PATH:/usr/sbin:/sbin"
for tool in cargo curl wrk nginx python3 taskset; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (core 0 for load, core 1 for sluice)"
case "$SECS" in ''|*[!0-9]*) die "--secs takes a whole number" ;; esac

mkdir -p "$OUT"; rm -rf "$LOGS"; mkdir -p "$LOGS"
WORK="$(mktemp -d /tmp/sluice-records-retention.XXXXXX)"
chmod 755 "$WORK"

if [ -z "$REV" ]; then
  log "building sluice from the working tree (release)"
  (cd "$ROOT" && timeout 1800 cargo build --release --bin sluice >&2) || die "cargo build failed"
  SLUICE_BUILT="${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice"
  GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null)" ] && GIT_REV="$GIT_REV + uncommitted changes"
else
  REV_ID="$(git -C "$ROOT" rev-parse --verify "$REV^{commit}" 2>/dev/null)" || die "--rev $REV: no such commit"
  log "building sluice at $REV ($REV_ID) from git archive (release)"
  mkdir -p "$WORK/src"
  git -C "$ROOT" archive "$REV_ID" | tar -x -C "$WORK/src"
  # bench/run.sh's private target dir: no contention with working-tree builds.
  (cd "$WORK/src" && CARGO_TARGET_DIR="$OUT/target-rev" timeout 1800 cargo build --release --bin sluice >&2) ||
    die "cargo build --release of $REV failed"
  SLUICE_BUILT="$OUT/target-rev/release/sluice"
  GIT_REV="$(git -C "$ROOT" rev-parse --short "$REV_ID") (--rev $REV)"
fi
# A private copy: a concurrent build by someone else cannot swap it mid-run.
cp "$SLUICE_BUILT" "$WORK/sluice"
SLUICE="$WORK/sluice"

# The limit in bytes, as sluice reads it (KiB/MiB/GiB are powers of 1024).
LIMIT_BYTES=$(python3 -c '
import re, sys
m = re.fullmatch(r"(\d+)\s*([KMG]i?B?|B?)", sys.argv[1].strip(), re.I)
if not m: sys.exit("cannot read --limit " + sys.argv[1])
n, u = int(m.group(1)), m.group(2).upper()[:1]
print(n * {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[u])' "$LIMIT") || die "--limit $LIMIT: use e.g. 64MiB"

wait_port() { # ADDR: up to 20 s
  local i
  for i in $(seq 200); do
    (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# One sample from /metrics text on stdin: METRIC [LABEL-MATCH] -> value (n/a when absent).
metric() {
  awk -v m="$1" -v l="${2:-}" '$1 == m || index($1, m "{") == 1 {
      if (l == "" || index($1, l) > 0) { print $2; found = 1; exit } }
    END { if (!found) print "n/a" }'
}
mib() { case "$1" in ''|n/a) echo n/a ;; *) awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}' ;; esac; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "n/a"; else printf "%.1f%%", a*100/b }'; }
db_bytes() { # DIR: "STORE WAL", STORE being records.db plus the segment files (records.blobs/)
  local d s w g
  d="$1"
  s=$(stat -c %s "$d/records.db" 2>/dev/null || echo 0)
  w=$(stat -c %s "$d/records.db-wal" 2>/dev/null || echo 0)
  g=$(find "$d/records.blobs" -maxdepth 1 -name '*.seg' -printf '%s\n' 2>/dev/null | awk '{t+=$1} END{print t+0}')
  echo "$((s + g)) $w"
}
# GET an admin path with the bearer token sluice wrote to DATA/admin.token
# (through a pipe, never on a command line).
admin_get() { # DATA PATH
  local token=""
  { read -r token <"$1/admin.token"; } 2>/dev/null || true
  timeout 10 curl -s --max-time 5 -H @<(printf 'Authorization: Bearer %s\n' "$token") "http://$ADMIN$2" || true
}

read -r P_NGINX P_PROXY P_ADMIN <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')"
ORIGIN="127.0.0.1:$P_NGINX"
PROXY="127.0.0.1:$P_PROXY"
ADMIN="127.0.0.1:$P_ADMIN"

# ------------------------------------------------------------ origin
mkdir -p "$WORK/www" "$WORK/nginx"
head -c $((256 * 1024)) /dev/urandom >"$WORK/www/256k"
head -c $((1024 * 1024)) /dev/urandom >"$WORK/www/1m"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000000;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server { listen $ORIGIN; root $WORK/www; location / { } }
}
EOF
log "starting nginx on $ORIGIN (core $LOADGEN_CPU)"
start_bg nginx taskset -c "$LOADGEN_CPU" nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
NGINX_PID=$LAST_PID
wait_port "$ORIGIN" || die "nginx did not start (see $LOGS/nginx.err)"

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
ROWS=()
FAILED=0
for size in "${SIZES[@]}"; do
  data="$WORK/data-$size"
  log "$size bodies: fresh sluice, --retain-bytes $LIMIT ($LIMIT_BYTES bytes), wrk -c$CONNS for ${SECS}s"
  start_bg "sluice-$size" taskset -c "$PROXY_CPU" "$SLUICE" --listen "$PROXY" --admin "$ADMIN" \
    --data-dir "$data" --retain-bytes "$LIMIT" --log-level warn --workers 1
  sluice_pid=$LAST_PID
  wait_port "$PROXY" || die "sluice did not start (see $LOGS/sluice-$size.err)"
  wait_port "$ADMIN" || die "sluice's admin server did not start (see $LOGS/sluice-$size.err)"

  # Sampler: "ms db_bytes wal_bytes" every 100 ms while sluice runs.
  (
    while kill -0 "$sluice_pid" 2>/dev/null; do
      echo "$(($(date +%s%N) / 1000000)) $(db_bytes "$data")"
      sleep "$SAMPLE_EVERY"
    done
  ) >"$LOGS/samples-$size.txt" 2>/dev/null &
  sampler=$!
  PIDS+=("$sampler")

  cat >"$WORK/wrk-$size.lua" <<EOF
wrk.path = "http://$ORIGIN/$size"
wrk.headers["Host"] = "$ORIGIN"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d bytes=%d errors=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
  cmd=(taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$WORK/wrk-$size.lua" "http://$PROXY/")
  echo "# ${cmd[*]}" >"$LOGS/wrk-$size.txt"
  timeout -k 5 $((SECS + 60)) "${cmd[@]}" >>"$LOGS/wrk-$size.txt" 2>&1 || log "wrk exited non-zero, see $LOGS/wrk-$size.txt"
  line="$(grep '^RESULT ' "$LOGS/wrk-$size.txt" | tail -n1 || true)"
  requests=$(printf '%s\n' "$line" | tr ' ' '\n' | sed -n 's/^requests=//p')
  bytes=$(printf '%s\n' "$line" | tr ' ' '\n' | sed -n 's/^bytes=//p')
  errors=$(printf '%s\n' "$line" | tr ' ' '\n' | sed -n 's/^errors=//p')

  # Until the recorder has written what it queued (bounded), then 1 s
  # more of samples: retention runs after each batch.
  for _ in $(seq 300); do
    q=$(admin_get "$data" /metrics | metric sluice_records_queue)
    case "$q" in 0|n/a) break ;; esac
    sleep 0.1
  done
  sleep 1
  admin_get "$data" /metrics >"$LOGS/metrics-$size.txt"
  m="$LOGS/metrics-$size.txt"
  kept=$(metric sluice_records <"$m")
  stored=$(metric sluice_records_stored_total <"$m")
  deleted=$(metric sluice_records_retention_deleted_total <"$m")
  drop_rec=$(metric sluice_records_dropped_total 'what="record"' <"$m")
  drop_body=$(metric sluice_records_dropped_total 'what="body"' <"$m")
  write_err=$(metric sluice_records_dropped_total 'what="write_error"' <"$m")
  read -r db wal <<<"$(db_bytes "$data")"
  running=$((db + wal))
  stop_pid "$sluice_pid"
  stop_pid "$sampler"
  read -r db wal <<<"$(db_bytes "$data")"
  after_exit=$((db + wal))

  samples=$(wc -l <"$LOGS/samples-$size.txt")
  max=$(awk 'BEGIN{m=0} {v=$2+$3; if (v>m) m=v} END{print m}' "$LOGS/samples-$size.txt")
  max_db=$(awk 'BEGIN{m=0} $2>m{m=$2} END{print m}' "$LOGS/samples-$size.txt")
  max_wal=$(awk 'BEGIN{m=0} $3>m{m=$3} END{print m}' "$LOGS/samples-$size.txt")
  over=$(awk -v a="$max" -v b="$LIMIT_BYTES" -v t="$TOLERANCE_PCT" 'BEGIN{ print (a > b * (1 + t/100)) ? 1 : 0 }')
  [ "$over" = 1 ] && FAILED=1
  body_bytes=$(case "$size" in 256k) echo $((256 * 1024)) ;; 1m) echo $((1024 * 1024)) ;; esac)
  # Bodies written ≈ records stored that kept their body × body size.
  written=$(awk -v s="$stored" -v d="$drop_body" -v b="$body_bytes" 'BEGIN{ if (s=="n/a"||d=="n/a") print "n/a"; else print (s-d)*b }')
  ROWS+=("| $size | ${requests:-n/a} (${errors:-n/a} errors) | $(mib "${bytes:-n/a}") | $(mib "$written") | $stored | $kept | $deleted | $drop_rec | $drop_body | $write_err | $(mib "$max") ($(mib "$max_db") + $(mib "$max_wal") WAL at most) | **$(pct "$max" "$LIMIT_BYTES")** | $(mib "$running") / $(mib "$after_exit") | $samples | $([ "$over" = 1 ] && echo "**over by more than ${TOLERANCE_PCT}%**" || echo ok) |")
  log "$size: max $(mib "$max") MiB ($(pct "$max" "$LIMIT_BYTES") of the limit), kept $kept records, dropped $drop_rec records / $drop_body bodies"
done
stop_pid "$NGINX_PID"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

report() {
  echo "# sluice record retention benchmark"
  echo
  echo "- command: \`$CMDLINE\` ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo "- sluice: commit $GIT_REV, \`taskset -c $PROXY_CPU sluice --listen <port> --admin <port> --data-dir <fresh dir> --retain-bytes $LIMIT --log-level warn --workers 1\` (bodies up to 1 MiB captured, the default)"
  echo "- load: \`wrk -t1 -c$CONNS -d${SECS}s\` through sluice, nginx serving random bytes; sizes of records.db + records.blobs/ + records.db-wal sampled every 100 ms while sluice ran"
  echo "- limit: $LIMIT = $LIMIT_BYTES bytes; target: never more than ${TOLERANCE_PCT}% over it"
  echo "- load average at start $LOAD_START, at end $LOAD_END (other work on the machine makes figures noisy)"
  echo
  echo "| body | requests | MiB through sluice | body MiB written (≈) | records stored | records kept | deleted by retention | dropped records | dropped bodies | write errors | max db + WAL (MiB) | **max / limit** | final MiB (running / after exit) | samples | verdict |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "*body MiB written* is (records stored − bodies dropped) × body size; bodies dropped were not captured because the recorder's queue body budget was spent, so they never reached the store. Samples: bench/out/records-retention-logs/samples-*.txt (ms, records.db + segment bytes, records.db-wal bytes)."
}
report | tee "$OUT/records_retention.md"
log "wrote $OUT/records_retention.md"
[ "$FAILED" = 0 ] || log "the store went over its limit by more than ${TOLERANCE_PCT}%"
