#!/usr/bin/env bash
# Workers run the agent's commands in a bubblewrap sandbox (elpis_worker/sandbox.py) and refuse to
# start without one. Install Debian's bubblewrap when it is missing, then check that it can create
# namespaces here. Never fatal: when the install is impossible, say what to do (`elpis doctor` and the
# worker say it again).
set -u
check() {
    bwrap --unshare-all --unshare-user --die-with-parent --ro-bind / / true >/dev/null 2>&1
}
if command -v bwrap >/dev/null 2>&1; then
    check || echo "ensure_bwrap: bwrap is installed but cannot create user namespaces here; allow them (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor userns restriction) or set tools.sandbox: none" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_bwrap: no apt-get here; install bubblewrap with your package manager (workers refuse to start without it)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_bwrap: not root and no password-less sudo; run: apt-get install bubblewrap" >&2
        exit 0
    fi
fi
echo "Installing Debian's bubblewrap for the agent's command sandbox (once)..."
export DEBIAN_FRONTEND=noninteractive
log=/tmp/elpis-bwrap-install.log
# The package lists may be missing on a fresh machine (or a slim image): update once, only then.
if ! { $SUDO apt-get install -y -qq --no-install-recommends bubblewrap \
        || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends bubblewrap; }; } >"$log" 2>&1; then
    echo "ensure_bwrap: the install failed (see $log); workers will refuse to start until bubblewrap is installed" >&2
    exit 0
fi
check || echo "ensure_bwrap: bwrap is installed but cannot create user namespaces here; allow them or set tools.sandbox: none" >&2
exit 0
