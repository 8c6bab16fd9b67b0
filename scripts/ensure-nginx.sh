#!/usr/bin/env bash
# ensure-nginx.sh: make sure nginx is on PATH: Debian's nginx package, installed as
# root with apt-get when missing (see ensure-deb.sh).
# Used by the reverse-proxy test (e2e/deploy).
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" nginx nginx 'NGINX_TESTS=0 skips the nginx test.'
