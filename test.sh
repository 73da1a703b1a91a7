#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is
# missing, then runs every test.
#   apt: iproute2 (ip, ss), python3, curl (a real client through tunnels),
#        chromium (browser tests: the web UI, a page through interception),
#        libnss3-tools (certutil: the browser's trust in sluice's CA),
#        git (a clone through interception), python3-pip when pip is missing
#   npm: tests/ui/node_modules (playwright-core, pinned in package-lock.json)
#   pip: requests, httpx[http2] (real Python clients through interception),
#        websockets (a real WebSocket client through a CONNECT tunnel)
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v certutil >/dev/null 2>&1 || need_apt+=(libnss3-tools)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi
if [ ! -d tests/ui/node_modules/playwright-core ]; then
  npm ci --prefix tests/ui --no-audit --no-fund
fi
# Debian's own python3 refuses pip installs outside a venv (PEP 668)
# unless told; older pips ignore both variables.
if ! python3 -c "import requests, httpx, h2, websockets" >/dev/null 2>&1; then
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
    python3 -m pip install --quiet requests 'httpx[http2]' websockets
fi

cargo test --release "$@"
