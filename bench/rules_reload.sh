#!/usr/bin/env bash
# Reload time of a 5,000-rule file: starts the release binary with
# --rules, sends SIGHUP N times and prints each reload's time as logged
# ("rules reloaded ... ms=..."), plus a PUT /api/rules round trip.
#   bench/rules_reload.sh [RULES] [ROUNDS]      (target: under 50 ms)
set -euo pipefail
cd "$(dirname "$0")/.."
RULES=${1:-5000}
ROUNDS=${2:-5}
cargo build --release --quiet
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
# Mostly exact hosts and *. wildcards, some host+path prefixes and regexes
# (the shape of examples/rules_bench.rs).
awk -v n="$RULES" 'BEGIN {
  for (i = 0; i < n; i++) {
    k = i % 50
    if (k == 0) printf "/^http:\\/\\/r%d\\.test\\/item\\/(\\d+)/ url:///items?id=$1\n", i
    else if (k < 3) printf "host%d.test/api/v%d/ status://503 resHeaders://x-rule=%d\n", i, k, i
    else if (k < 20) printf "*.wild%d.example.com 127.0.0.1:%d\n", i, 1000 + k
    else printf "host%d.example.com delay://10ms resHeaders://x-n=%d\n", i, i
  }
}' > "$dir/rules.txt"
./target/release/sluice --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir :memory: \
  --rules "$dir/rules.txt" --log-level info 2> "$dir/log" &
pid=$!
for _ in $(seq 50); do grep -q "sluice listening" "$dir/log" && break; sleep 0.1; done
admin=$(grep -o 'admin=[0-9.:]*' "$dir/log" | head -1 | cut -d= -f2)
for _ in $(seq "$ROUNDS"); do
  kill -HUP "$pid"
  sleep 0.5
done
echo "rules: $(grep -c . "$dir/rules.txt")"
grep "rules reloaded" "$dir/log" | grep -o 'ms=[0-9.]*' | sed 's/^/SIGHUP reload /'
if [ -n "$admin" ] && command -v curl >/dev/null; then
  for _ in $(seq "$ROUNDS"); do
    curl -s -o /dev/null -w 'PUT /api/rules round trip ms=%{time_total}\n' \
      -X PUT --data-binary @"$dir/rules.txt" "http://$admin/api/rules" |
      awk -F= '{ printf "%s=%.1f\n", $1, $2 * 1000 }'
  done
fi
