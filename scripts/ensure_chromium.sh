#!/usr/bin/env bash
# The browser test (tests/test_pages_browser.py) drives Debian's Chromium through chromedriver.
# Install both from Debian's packages when they are missing. Never fatal here: when the install is
# impossible the browser test fails and says so, and every other test still runs.
set -u
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no apt-get here; install Chromium and chromedriver by hand for the browser test" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: not root and no password-less sudo; run: apt-get install chromium chromium-driver" >&2
        exit 0
    fi
fi
echo "Installing Debian's chromium and chromium-driver for the browser test (once)..."
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/tmp/elpis-chromium-install.log 2>&1; then
    echo "ensure_chromium: the install failed (see /tmp/elpis-chromium-install.log); the browser test will fail" >&2
fi
exit 0
