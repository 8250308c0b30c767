#!/bin/sh
# make bench: every benchmark, side by side with Kamailio, on build/edged.
# Results are printed as Markdown; docs/BENCHMARKS.md records them.
set -eu
cd "$(dirname "$0")/../.."
export EDGED="${EDGED:-$PWD/build/edged}"
tests/bench/bench.py memory
tests/bench/bench.py relay
