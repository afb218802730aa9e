#!/usr/bin/env bash
# Chromium and its driver for the playground's browser tests (tests/test_playground.py).
# Installs Debian's packages when they are missing and we are root; otherwise says how.
# Never fails: without Chromium those tests skip and say why.
set -uo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium and chromium-driver for the playground tests"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver >/dev/null; }; then
        exit 0
    fi
    echo "Could not install chromium; the playground's browser tests will skip." >&2
    exit 0
fi
echo "Chromium is not installed, so the playground's browser tests will skip." >&2
echo "Install it with: sudo apt-get install -y chromium chromium-driver" >&2
exit 0
