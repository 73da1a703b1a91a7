#!/usr/bin/env bash
# HTTPS interception benchmark: keep-alive HTTPS requests (curl, 16
# parallel connections, HTTP/1.1 and HTTP/2) to a local nginx over TLS,
# direct and through intercepting proxies on this machine: sluice
# (--intercept all) and, when installed (pip install mitmproxy), mitmdump.
#
#   bench/intercept.sh [--bin PATH] [--requests N]
#
# The origin runs on core 0 with curl; the proxy under test on core 1.
# Output: a Markdown table on stdout and in bench/out/intercept.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$HERE/../target/release/sluice"
N=4000
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --requests) N="$2"; shift ;;
    *) echo "intercept.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
command -v nginx >/dev/null || { apt-get install -y -qq nginx >/dev/null; }
[ -x "$BIN" ] || (cd "$HERE/.." && cargo build --release >&2)
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The origin's CA and certificate (localhost), and nginx serving 1 KiB.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench origin CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout "$WORK/o.key" -out "$WORK/o.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/o.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/ext" -out "$WORK/o.pem" 2>/dev/null
chmod 755 "$WORK"
head -c 1024 /dev/zero | tr '\0' x >"$WORK/1k"; chmod 644 "$WORK/1k"
ORIGIN_PORT="$(free_port)"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err info;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:$ORIGIN_PORT ssl http2; server_name localhost;
    ssl_certificate $WORK/o.pem; ssl_certificate_key $WORK/o.key;
    location / { root $WORK; } } }
CONF
taskset -c 0 nginx -c "$WORK/nginx.conf" & PIDS+=($!)
sleep 0.5

URL="https://localhost:$ORIGIN_PORT/1k?[1-$N]"
# req/s for N requests over 16 keep-alive connections.
run() { # NAME CA PROXY HTTPFLAG
  local start end
  start=$(date +%s.%N)
  # Bodies and codes both go to stdout (curl's -o names one output per
  # URL); each code is on a line of its own.
  taskset -c 0 curl -s --no-progress-meter --parallel --parallel-max 16 --cacert "$2" \
    ${3:+-x "$3"} "$4" -w '\n%{http_code}\n' "$URL" >"$WORK/codes" 2>"$WORK/curl.err" || true
  end=$(date +%s.%N)
  local ok
  ok=$(grep -c '^200$' "$WORK/codes" || true)
  python3 -c "import sys; print(f'{int(sys.argv[1])/(float(sys.argv[3])-float(sys.argv[2])):.0f}')" "$ok" "$start" "$end" >"$WORK/rate"
  echo "$ok"
}
results=()
measure() { # NAME CA PROXY
  for flag in --http1.1 --http2; do
    ok=$(run "$1" "$2" "$3" "$flag")
    results+=("| $1 | ${flag#--} | $(cat "$WORK/rate") | $ok/$N |")
  done
}

measure "direct" "$WORK/ca.pem" ""

SP="$(free_port)"
taskset -c 1 "$BIN" --listen "127.0.0.1:$SP" --admin off --data-dir "$WORK/sluice" \
  --intercept all --upstream-ca "$WORK/ca.pem" --log-level warn >"$WORK/sluice.out" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do [ -f "$WORK/sluice/ca.pem" ] && break; sleep 0.1; done
sleep 0.3
measure "sluice (records on)" "$WORK/sluice/ca.pem" "http://127.0.0.1:$SP"

if command -v mitmdump >/dev/null; then
  MP="$(free_port)"
  taskset -c 1 mitmdump -q --listen-host 127.0.0.1 -p "$MP" --set confdir="$WORK/mitm" \
    --set ssl_verify_upstream_trusted_ca="$WORK/ca.pem" >"$WORK/mitm.out" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do [ -f "$WORK/mitm/mitmproxy-ca-cert.pem" ] && break; sleep 0.1; done
  sleep 1
  measure "mitmdump $(mitmdump --version 2>/dev/null | head -1 | awk '{print $2}')" \
    "$WORK/mitm/mitmproxy-ca-cert.pem" "http://127.0.0.1:$MP"
fi

mkdir -p "$HERE/out"
{
  echo "| path | protocol | req/s | answered |"
  echo "|---|---|---:|---:|"
  printf '%s\n' "${results[@]}"
} | tee "$HERE/out/intercept.md"
