#!/usr/bin/env bash
# Two sluice binaries measured in one session, alternating (A B A B ...),
# so machine drift hits both alike: the issue-12 "within 3 %" check.
#
#   bench/compare.sh BIN_A BIN_B [ROUNDS] [run.sh args...]
#   e.g. bench/compare.sh /tmp/before/sluice target/release/sluice 2 --only ABCDE
#
# Each run's table is kept in bench/out/compare/{a,b}-ROUND.md; the sluice
# rows of every run are printed one after another at the end.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 2 ] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; shift 2
ROUNDS="${1:-2}"; [ $# -gt 0 ] && shift
OUTDIR="$HERE/out/compare"
rm -rf "$OUTDIR"; mkdir -p "$OUTDIR"
for r in $(seq 1 "$ROUNDS"); do
  for side in a b; do
    bin="$A"; [ "$side" = b ] && bin="$B"
    echo "== round $r, $side: $bin" >&2
    "$HERE/run.sh" --bin "$bin" "$@" >/dev/null
    cp "$HERE/out/results.md" "$OUTDIR/$side-$r.md"
  done
done
for f in "$OUTDIR"/*.md; do
  echo "### $(basename "$f" .md)"
  grep -E '^\| *(sluice|section|figure|[A-E][ .:])' "$f" || grep -E '^\|' "$f"
  echo
done
