#!/usr/bin/env bash
# ensure-chromium.sh: make sure a headless-capable Chromium is on PATH for
# the browser tests (e2e/). Idempotent: does nothing when chromium is there.
# Installs Debian's "chromium" package when run as root; otherwise prints
# how to install it and fails.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
	echo "ensure-chromium: installing Debian's chromium package" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	command -v chromium >/dev/null 2>&1 || {
		echo "ensure-chromium: chromium installed but not on PATH" >&2
		exit 1
	}
	exit 0
fi

cat >&2 <<'MSG'
ensure-chromium: chromium is not installed, and installing it needs root.
Install it with:
    sudo apt-get update && sudo apt-get install -y chromium
or run this script as root. (DIRECTUS_TESTS=0 skips the browser tests.)
MSG
exit 1
