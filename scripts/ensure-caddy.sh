#!/usr/bin/env bash
# ensure-caddy.sh: make sure caddy is on PATH: Debian's caddy package, installed as
# root with apt-get when missing (see ensure-deb.sh).
# Used by the reverse-proxy test (e2e/deploy).
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" caddy caddy 'CADDY_TESTS=0 skips the Caddy test.'
