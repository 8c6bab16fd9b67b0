#!/usr/bin/env bash
# ensure-podman.sh: make sure podman and runc are on PATH: Debian's podman
# and runc packages, installed as root with apt-get when missing (see
# ensure-deb.sh). Used by the container test (e2e/deploy). runc because
# crun, podman's default runtime, refuses hosts whose cgroups are "hybrid"
# (v1 controllers plus a v2 mount), as this project's machines are.
set -euo pipefail
dir="$(dirname "${BASH_SOURCE[0]}")"
hint='PODMAN_TESTS=0 skips the container test.'
"$dir/ensure-deb.sh" podman podman "$hint"
"$dir/ensure-deb.sh" runc runc "$hint"
