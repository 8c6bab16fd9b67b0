#!/usr/bin/env bash
# ensure-gnuplot.sh: make sure gnuplot is on PATH: Debian's gnuplot-nox package, installed as
# root with apt-get when missing (see ensure-deb.sh).
# Used by make bench to draw the latency plot.
exec "$(dirname "${BASH_SOURCE[0]}")/ensure-deb.sh" gnuplot gnuplot-nox
