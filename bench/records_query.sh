#!/usr/bin/env bash
# sluice records query benchmark: how long GET /api/records takes to answer
# a filtered first page (and the page after it) with 1,000,000 stored
# records. Target: under 50 ms.
#
#   bench/records_query.sh                   1,000,000 records, 7 runs per page
#   bench/records_query.sh --records N       N records instead
#   bench/records_query.sh --runs N          N timed runs per page
#   bench/records_query.sh --dir DIR         keep the store in DIR
#                                            [default: bench/out/records-<N>]
#   bench/records_query.sh --refill          fill DIR again even if it is full
#   bench/records_query.sh --rev HEAD        build a committed revision (git
#                                            archive, target dir bench/out/target-rev)
#                                            instead of the working tree
#
# Steps: build sluice and the fill_records example (release); fill DIR with
# N synthetic records (`cargo run --release --example fill_records -- DIR N`;
# skipped when DIR/fill_records.meta says it already holds N); start sluice
# on DIR (admin on a free port, --retain-records/--retain-bytes/--retain-age
# raised so that retention deletes nothing); wait for /api/health; then for
# each filter time `GET /api/records?<filter>&limit=100` RUNS times over one
# keep-alive connection (first page), and RUNS times the page after it (the
# first page's next_cursor). Each filter's total match count and SQLite's
# EXPLAIN QUERY PLAN come from python3's sqlite3 module on the file,
# read-only, with the SQL that src/record/query.rs (Filter::sql + page)
# builds. Every process started here is killed by PID on exit.
# Output: Markdown on stdout and in bench/out/records_query.md, raw logs in
# bench/out/records-query-logs/.
set -euo pipefail

CMDLINE="bench/records_query.sh${*:+ $*}"
N=1000000
RUNS=7
DIR=""
REFILL=0
REV=""
while [ $# -gt 0 ]; do
  case "$1" in
    --records) shift; N="${1:?--records needs a number}" ;;
    --runs) shift; RUNS="${1:?--runs needs a number}" ;;
    --dir) shift; DIR="${1:?--dir needs a folder}" ;;
    --refill) REFILL=1 ;;
    --rev) shift; REV="${1:?--rev needs a revision}" ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "records_query.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="$HERE/out"
LOGS="$OUT/records-query-logs"
DIR="${DIR:-$OUT/records-$N}"
PROXY_CPU=1
TIMER_CPU=0
TARGET_MS=50

log() { printf '[records-query %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
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
  [ -n "$WORK" ] && [ -d "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in cargo curl python3 taskset; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (core 0 for the timer, core 1 for sluice)"
case "$N$RUNS" in *[!0-9]*) die "--records and --runs take whole numbers" ;; esac

mkdir -p "$OUT"; rm -rf "$LOGS"; mkdir -p "$LOGS"
WORK="$(mktemp -d /tmp/sluice-records-query.XXXXXX)"

# ------------------------------------------------------------ build
if [ -z "$REV" ]; then
  log "building sluice and examples/fill_records from the working tree (release)"
  (cd "$ROOT" && timeout 1800 cargo build --release --bin sluice --example fill_records >&2) || die "cargo build failed"
  TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
else
  REV_ID="$(git -C "$ROOT" rev-parse --verify "$REV^{commit}" 2>/dev/null)" || die "--rev $REV: no such commit"
  log "building sluice and examples/fill_records at $REV ($REV_ID) from git archive (release)"
  mkdir -p "$WORK/src"
  git -C "$ROOT" archive "$REV_ID" | tar -x -C "$WORK/src"
  # A revision from before the example existed gets the working tree's copy.
  if [ ! -f "$WORK/src/examples/fill_records.rs" ]; then
    mkdir -p "$WORK/src/examples"
    cp "$ROOT/examples/fill_records.rs" "$WORK/src/examples/"
  fi
  # bench/run.sh's private target dir: no contention with working-tree builds.
  (cd "$WORK/src" && CARGO_TARGET_DIR="$OUT/target-rev" timeout 1800 cargo build --release --bin sluice --example fill_records >&2) ||
    die "cargo build --release of $REV failed"
  TARGET="$OUT/target-rev/release"
fi
# Private copies: a concurrent build by someone else cannot swap them mid-run.
cp "$TARGET/sluice" "$WORK/sluice"
cp "$TARGET/examples/fill_records" "$WORK/fill_records"
if [ -n "$REV" ]; then
  GIT_REV="$(git -C "$ROOT" rev-parse --short "$REV_ID") (--rev $REV)"
else
  GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml 2>/dev/null)" ] && GIT_REV="$GIT_REV + uncommitted changes"
fi

# ------------------------------------------------------------ fill
meta() { sed -n "s/^$1=//p" "$DIR/fill_records.meta" 2>/dev/null | head -n1; }
# The schema's indexes as this build creates them (an empty store), and as
# the file has them: a store filled by an older build keeps indexes that
# were dropped since, so a mismatch means refilling.
indexes() { # DB -> "name: sql" lines
  python3 - "$1" <<'PY'
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
for name, sql in c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"):
    print("%s: %s" % (name, " ".join(sql.split())))
PY
}
timeout 60 "$WORK/fill_records" "$WORK/schema" 0 >/dev/null || die "fill_records cannot create a store"
indexes "$WORK/schema/records.db" >"$WORK/indexes-build.txt"
if [ "$REFILL" = 0 ] && [ -f "$DIR/records.db" ] && [ "$(meta records)" = "$N" ] &&
  ! { indexes "$DIR/records.db" | cmp -s - "$WORK/indexes-build.txt"; }; then
  log "$DIR was filled with other indexes than this build creates: refilling"
  REFILL=1
fi
if [ "$REFILL" = 0 ] && [ -f "$DIR/records.db" ] && [ "$(meta records)" = "$N" ]; then
  log "reusing $DIR: it holds $N records (filled $(date -d "@$(meta filled_at)" '+%F %T'); --refill to start over)"
else
  log "filling $DIR with $N records"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  timeout 3600 "$WORK/fill_records" "$DIR" "$N" | tee "$LOGS/fill.txt" >&2 || die "fill_records failed (see $LOGS/fill.txt)"
fi
[ "$(meta records)" = "$N" ] || die "$DIR/fill_records.meta does not say $N records"
FILLED_AT=$(meta filled_at)
POPULAR=$(meta popular_host)
RARE=$(meta rare_host)
URL_COMMON=$(meta url_common)
URL_RARE=$(meta url_rare)
CLIENT=$(meta client)
DB_MIB=$(du -m "$DIR/records.db" | cut -f1)
INDEXES="$(indexes "$DIR/records.db")"

# ------------------------------------------------------------ sluice
read -r P_ADMIN P_PROXY <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')"
ADMIN="127.0.0.1:$P_ADMIN"
# Limits raised so that retention deletes nothing: the store is ~1.2 GB
# (over the 1GiB default byte limit) and its records span the 24 h
# before the fill (the age limit would empty a store reused a week later).
SLUICE_ARGS=(--data-dir "$DIR" --admin "$ADMIN" --listen "127.0.0.1:$P_PROXY" --retain-records 2000000
  --retain-bytes 64GiB --retain-age 3650d --log-level warn --workers 1)
log "starting sluice on $DIR (admin $ADMIN, core $PROXY_CPU)"
# sluice prints its admin URL, token included, to stdout: the log keeps it
# masked.
taskset -c "$PROXY_CPU" "$WORK/sluice" "${SLUICE_ARGS[@]}" \
  > >(sed -u 's/token=[^[:space:]&]*/token=<hidden>/g' >"$LOGS/sluice.out") 2>"$LOGS/sluice.err" &
SLUICE_PID=$!
PIDS+=("$SLUICE_PID")
# The admin server wants the bearer token sluice writes to the data dir
# (mode 0600); it reaches curl through a pipe, never a command line.
TOKEN_FILE="$DIR/admin.token"
admin_get() { # PATH [CURL ARGS...]
  local path="$1" token=""; shift
  { read -r token <"$TOKEN_FILE"; } 2>/dev/null || true
  timeout 5 curl -s --max-time 4 "$@" -H @<(printf 'Authorization: Bearer %s\n' "$token") "http://$ADMIN$path"
}
ok=0
# Opening the store may build missing indexes first: allow 2 minutes.
for _ in $(seq 1200); do
  if admin_get /api/health -f >/dev/null 2>&1; then ok=1; break; fi
  kill -0 "$SLUICE_PID" 2>/dev/null || break
  sleep 0.1
done
[ "$ok" = 1 ] || die "sluice did not answer /api/health within 2 min (see $LOGS/sluice.err)"
STORED=$(admin_get /metrics | awk '$1 == "sluice_records" {print $2}')
[ "$STORED" = "$N" ] || log "WARNING: sluice reports $STORED records in the store, expected $N"

# ------------------------------------------------------------ filters
# name|query string. Time filters are absolute (Unix seconds) so that a
# reused store answers the same as a fresh one: "since=1h" is the last
# hour of the data.
FILTERS=(
  "none|"
  "host (popular: $POPULAR)|host=$POPULAR"
  "host (rare: $RARE)|host=$RARE"
  "host wildcard (*.github.com)|host=*.github.com"
  "status=5xx|status=5xx"
  "status=404|status=404"
  "method=POST|method=POST"
  "url (common: $URL_COMMON)|url=$URL_COMMON"
  "url (rare: $URL_RARE)|url=$URL_RARE"
  "since=1h (last hour of the data)|since=$((FILLED_AT - 3600))"
  "error=true|error=true"
  "min_duration=1s|min_duration=1s"
  "client (prefix $CLIENT, ~25%)|client=$CLIENT"
  "client (one address ${CLIENT}17:)|client=${CLIENT}17:"
  "host popular + status=5xx|host=$POPULAR&status=5xx"
  "host rare + status=5xx|host=$RARE&status=5xx"
  "host popular + since=1h|host=$POPULAR&since=$((FILLED_AT - 3600))"
  "method=DELETE + status=404|method=DELETE&status=404"
  "status=5xx + since=1h|status=5xx&since=$((FILLED_AT - 3600))"
)
printf '%s\n' "${FILTERS[@]}" >"$WORK/filters.txt"

log "timing ${#FILTERS[@]} filters, $RUNS runs of page 1 and page 2 each (timer on core $TIMER_CPU)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
timeout -k 5 1800 taskset -c "$TIMER_CPU" python3 - "$ADMIN" "$RUNS" "$WORK/filters.txt" "$DIR/records.db" "$TARGET_MS" "$TOKEN_FILE" \
  >"$WORK/table.md" 2>"$LOGS/timer.err" <<'PY' || die "the timer failed (see $LOGS/timer.err)"
import http.client, json, sqlite3, statistics, sys, time, urllib.parse

admin, runs, filters_file, db, target_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
with open(sys.argv[6]) as f:
    auth = {"Authorization": "Bearer " + f.read().strip()}
host, port = admin.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=60)

def get(query):
    """One GET over the keep-alive connection: (seconds, status, body)."""
    global conn
    path = "/api/records?" + query
    for attempt in (0, 1):
        try:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=auth)
            resp = conn.getresponse()
            body = resp.read()
            return time.perf_counter() - t0, resp.status, body
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            if attempt:
                raise

# --- the SQL of src/record/query.rs (Filter::sql, page), for counts and plans
COLUMNS = """id, kind, started_us, conn_id, upstream_conn_id, client, user,
    method, url, host, version, status, req_size, resp_size, content_type, total_us,
    upstream_addr, error, close_reason, rules"""

def like_escape(s):
    return "".join("\\" + c if c in "%_\\" else c for c in s)

def parse_duration(v):
    units = {"ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
    for u in ("ms", "s", "m", "h"):
        if v.endswith(u) and v[: -len(u)].isdigit():
            return int(int(v[: -len(u)]) * units[u])
    raise ValueError("duration " + v)

def where(q):
    clauses, params = [], []
    kv = dict(urllib.parse.parse_qsl(q))
    if "host" in kv:
        h = kv["host"].lower()
        if h.startswith("*."):
            clauses.append("(host = ? OR host LIKE ? ESCAPE '\\')")
            params += [h[2:], "%." + like_escape(h[2:])]
        else:
            clauses.append("host = ?"); params.append(h)
    if "url" in kv:
        clauses.append("url LIKE ? ESCAPE '\\'"); params.append("%" + like_escape(kv["url"]) + "%")
    if "method" in kv:
        clauses.append("method = ?"); params.append(kv["method"].upper())
    if "status" in kv:
        s = kv["status"].lower()
        if s.endswith("xx"):
            lo = int(s[0]) * 100; hi = lo + 99
        else:
            lo = hi = int(s)
        if lo == hi:
            clauses.append("status = ?"); params.append(lo)
        else:
            clauses.append("status BETWEEN ? AND ?"); params += [lo, hi]
    if "client" in kv:
        clauses.append("client LIKE ? ESCAPE '\\'"); params.append(like_escape(kv["client"]) + "%")
    if "since" in kv:
        clauses.append("started_us >= ?"); params.append(int(kv["since"]) * 1_000_000)
    if "min_duration" in kv:
        clauses.append("total_us >= ?"); params.append(parse_duration(kv["min_duration"]))
    if kv.get("error") == "true":
        clauses.append("error IS NOT NULL")
    if "cursor" in kv:
        clauses.append("id < ?"); params.append(int(kv["cursor"]))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

ro = sqlite3.connect("file:%s?mode=ro" % db, uri=True)

def ms(s):
    return s * 1000.0

rows, slow, plans = [], [], []
get("limit=1")  # the first query opens sluice's reader connection
for line in open(filters_file):
    name, _, query = line.rstrip("\n").partition("|")
    q1 = (query + "&" if query else "") + "limit=100"
    times1, page1 = [], None
    for _ in range(runs):
        t, status, body = get(q1)
        if status != 200:
            raise SystemExit("GET /api/records?%s: HTTP %d: %s" % (q1, status, body[:300]))
        times1.append(t)
        page1 = body
    p1 = json.loads(page1)
    n1 = len(p1["records"])
    cursor = p1.get("next_cursor")
    times2, n2 = [], None
    if cursor is not None:
        q2 = q1 + "&cursor=%d" % cursor
        for _ in range(runs):
            t, status, body = get(q2)
            if status != 200:
                raise SystemExit("GET /api/records?%s: HTTP %d" % (q2, status))
            times2.append(t)
        n2 = len(json.loads(body)["records"])
    w, params = where(query)
    t0 = time.perf_counter()
    total = ro.execute("SELECT COUNT(*) FROM records" + w, params).fetchone()[0]
    count_ms = ms(time.perf_counter() - t0)
    sql = "SELECT %s FROM records%s ORDER BY id DESC LIMIT ?" % (" ".join(COLUMNS.split()), w)
    plan = [r[3] for r in ro.execute("EXPLAIN QUERY PLAN " + sql, params + [101])]
    med1, max1 = ms(statistics.median(times1)), ms(max(times1))
    med2 = ms(statistics.median(times2)) if times2 else None
    max2 = ms(max(times2)) if times2 else None
    over = med1 > target_ms or (med2 is not None and med2 > target_ms)
    over_max = max1 > target_ms or (max2 is not None and max2 > target_ms)
    flag = "**SLOW**" if over else ("max only" if over_max else "")
    f = lambda v: "n/a" if v is None else "%.1f" % v
    rows.append("| %s | `%s` | %d | %d | %s | %s | %s | %s | %s |" % (
        name, query or "(none)", total, n1, f(med1), f(max1), f(med2), f(max2), flag))
    plans.append((name, query, sql, params, plan, over or over_max))
    print("%s: page 1 median %.1f ms max %.1f ms, page 2 median %s ms, %d matches" % (
        name, med1, max1, f(med2), total), file=sys.stderr, flush=True)

print("| filter | query | matches | page 1 rows | page 1 median ms | page 1 max ms | page 2 median ms | page 2 max ms | over %g ms |" % target_ms)
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    print(r)
print()
slow_plans = [p for p in plans if p[5]]
if slow_plans:
    print("### Filters over %g ms: query plans" % target_ms)
    print()
    for name, query, sql, params, plan, _ in slow_plans:
        print("- **%s** (`%s`): `%s` with %r" % (name, query or "(none)", sql.split(" FROM ")[1], params + [101]))
        for p in plan:
            print("  - `%s`" % p)
    print()
else:
    print("No filter took over %g ms." % target_ms)
    print()
print("<details><summary>Query plans of every filter (page 1; SQLite %s via python3, sluice bundles its own SQLite)</summary>" % sqlite3.sqlite_version)
print()
for name, query, sql, params, plan, _ in plans:
    print("- %s: %s" % (name, "; ".join("`%s`" % p for p in plan)))
print()
print("</details>")
PY
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
stop_pid "$SLUICE_PID"

report() {
  echo "# sluice records query benchmark"
  echo
  echo "- command: \`$CMDLINE\` ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo "- sluice: commit $GIT_REV, \`taskset -c $PROXY_CPU sluice ${SLUICE_ARGS[*]}\`"
  echo "- store: $N records ($STORED seen by sluice at start), records.db $DB_MIB MiB, in \`$DIR\` (filled $(date -d "@$FILLED_AT" '+%F %T'); records span the 24 h before)"
  echo "- each figure: \`GET /api/records?<query>&limit=100\`, $RUNS runs over one keep-alive connection (timer: python3 on core $TIMER_CPU), time from sending the request to the last byte of the answer; page 2 adds \`cursor=<page 1's next_cursor>\`; *matches* is \`SELECT COUNT(*)\` with the same WHERE clause"
  echo "- indexes: $(printf '%s\n' "$INDEXES" | sed 's/^[^:]*: //' | paste -sd ';' | sed 's/;/; /g')"
  echo "- load average at start $LOAD_START, at end $LOAD_END (other work on the machine makes figures noisy); target: under $TARGET_MS ms"
  echo
  cat "$WORK/table.md"
}
report | tee "$OUT/records_query.md"
log "wrote $OUT/records_query.md"
