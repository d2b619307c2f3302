#!/usr/bin/env bash
# pybuild vs buildah benchmark (issue 7): `just bench` or `bash bench/run.sh`.
# Installs what is missing (buildah, pigz, zstd, time, docker-registry, mmdebstrap),
# builds pybuild in release mode, then runs bench/bench.py, which sets up the fixtures
# (wheelhouse, base image in a loopback registry), runs the 8 cases alternating the
# tools, measures compression throughput and writes docs/performance.md.
#
# Environment: BENCH_RUNS (default 5), BENCH_CASES (default 1,2,3,4,5,6,7,8,z),
# CARGO_TARGET_DIR (default ./target), BENCH_TMPDIR (default /var/tmp).
# Extra arguments go to bench.py (--keep keeps the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

packages=(buildah pigz zstd time docker-registry mmdebstrap curl python3 ca-certificates)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

target=${CARGO_TARGET_DIR:-$repo/target}
cargo build --release --locked --bin pybuild
cargo build --release --locked -p pybuild-layer --example compress_throughput

exec python3 bench/bench.py --pybuild "$target/release/pybuild" \
    --compress "$target/release/examples/compress_throughput" "$@"
