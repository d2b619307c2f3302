# pybuild developer recipes. `just` is optional: `.ci/run` does the same checks
# (lint, then the README's test command) with nothing but bash and cargo.

# The conformance vectors live beside the checkout; an already-set variable wins.
export PYBUILD_CONFORMANCE := env_var_or_default("PYBUILD_CONFORMANCE", justfile_directory() + "/../shared/conformance/buildkit")

# List the recipes.
default:
    @just --list

# Run the whole test suite (the README's test command).
test:
    cargo test --workspace --locked

# Formatting and clippy, warnings as errors.
lint:
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo fmt --all --check

# What CI runs: lint, then test.
ci: lint test

# Fuzz each target for SECONDS (default 240) with cargo-fuzz (not part of CI).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain use them.
fuzz seconds="240":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && for t in parse_dockerfile expand_word dockerignore apply_layer oci_json; do RUSTC_BOOTSTRAP=1 cargo fuzz run -O $t -- -max_total_time={{seconds}} -rss_limit_mb=2048 || exit 1; done

# pybuild vs buildah benchmarks (issue 7; not part of CI): writes docs/performance.md.
# Same as `bash bench/run.sh`; BENCH_RUNS (default 5) sets the runs per case.
bench:
    bash bench/run.sh
