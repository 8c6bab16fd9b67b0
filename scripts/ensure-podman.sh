#!/usr/bin/env bash
# ensure-podman.sh: make sure podman is on PATH: Debian's podman package, installed as
# root with apt-get when missing (see ensure-deb.sh).
# Used by the container test (e2e/deploy).
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" podman podman 'PODMAN_TESTS=0 skips the container test.'
