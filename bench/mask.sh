#!/bin/sh
# Masking benchmark, detector part: throughput of the 20-detector scan on ~64 MiB of generated
# result-like data, single core (per DataRow cell and as a COPY stream). The SELECT-through-the-
# gateway part (masking on vs off vs direct, rows/s, peak RSS) is added with the relay integration.
#
# Usage: bench/mask.sh [MiB]     (default 64)
set -eu
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example mask_bench -- "${1:-64}"
