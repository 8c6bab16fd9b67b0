#!/usr/bin/env bash
# ensure-deb.sh COMMAND PACKAGE [HINT]: make sure COMMAND is on PATH,
# installing Debian's PACKAGE when it is missing and this runs as root with
# apt-get. Idempotent: does nothing when COMMAND is there. Otherwise prints
# how to install it (and HINT, e.g. how to skip the tests needing it) and
# fails. The ensure-*.sh scripts are one line each on top of this.
set -euo pipefail

cmd="${1:?usage: ensure-deb.sh COMMAND PACKAGE [HINT]}"
pkg="${2:?usage: ensure-deb.sh COMMAND PACKAGE [HINT]}"
hint="${3:-}"

# Debian installs some tools (nginx) under /usr/sbin, which a non-login
# root shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

if command -v "$cmd" >/dev/null 2>&1; then
	exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-deb: installing Debian's $pkg package (for $cmd)" >&2
	# An update only when the package is unknown: the lists may be missing
	# or stale on a fresh machine.
	if ! apt-cache show "$pkg" >/dev/null 2>&1; then
		apt-get update -qq
	fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
	fi
	command -v "$cmd" >/dev/null 2>&1 || {
		echo "ensure-deb: $pkg installed but $cmd is not on PATH" >&2
		exit 1
	}
	exit 0
fi

cat >&2 <<MSG
ensure-deb: $cmd is not installed, and installing it needs root and apt-get.
Install it with:
    sudo apt-get update && sudo apt-get install -y $pkg
or run this script as root.${hint:+ $hint}
MSG
exit 1
