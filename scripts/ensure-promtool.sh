#!/usr/bin/env bash
# ensure-promtool.sh: make sure promtool is on PATH: Debian's prometheus package (promtool
# comes with it), installed as root with apt-get when missing (see ensure-deb.sh).
# Used by the metrics test (handlers/metrics_test.go: promtool check metrics).
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" promtool prometheus 'Without it the metrics test lints with client_golang'"'"'s promlint only.'
