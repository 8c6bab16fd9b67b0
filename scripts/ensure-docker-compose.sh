#!/usr/bin/env bash
# ensure-docker-compose.sh: make sure docker-compose is on PATH: Debian's
# docker-compose package, installed as root with apt-get when missing (see
# ensure-deb.sh). Used by e2e/deploy to validate compose.yaml
# (`docker-compose config`); no Docker engine is needed for that.
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" docker-compose docker-compose 'COMPOSE_TESTS=0 skips the compose check.'
