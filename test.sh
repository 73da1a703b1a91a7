#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is
# missing, then runs every test.
#   apt: iproute2 (ip, ss), python3, curl (a real client through tunnels),
#        chromium (browser test of the web UI)
#   npm: tests/ui/node_modules (playwright-core, pinned in package-lock.json)
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
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

cargo test --release "$@"
