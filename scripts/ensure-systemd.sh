#!/usr/bin/env bash
# ensure-systemd.sh: make sure systemd-analyze is on PATH: Debian's systemd
# package, installed as root with apt-get when missing (see ensure-deb.sh).
# Used by the unit file's test (e2e/deploy); systemd need not be running.
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" systemd-analyze systemd 'SYSTEMD_TESTS=0 skips the unit test.'
