#!/usr/bin/env bash
# candle-core 0.11.1's own test suite, built with its `cuda` feature and run on
# the emulator with every check on (memcheck, racecheck, initcheck, synccheck;
# a `PTX_EMU_*` variable set by the caller still switches one off).
#
#   scripts/candle-core-tests.sh                          every test target (no doctests)
#   scripts/candle-core-tests.sh --test tensor_tests      one target
#   scripts/candle-core-tests.sh --test tensor_tests -- cuda   its CUDA tests only
#
# Arguments go to `cargo test` in place of the default `--tests`. The source is
# the published crate (its tests ship in it), copied from cargo's registry —
# fetched first when absent — into target/candle-core-tests/, and built there
# in its own target directory with its own Cargo.lock, so a second run only
# rebuilds what changed (the emulator's libraries are loaded at run time).
# The build links as tests/dependent_candle.rs does: cudarc's
# `dynamic-linking` takes `-lcuda -lcublas -lcublasLt -lcurand` and
# candle-kernels' `-lcudart` from the emulator's folder and `-lnvrtc` from the
# toolchain's wheels, both on LIBRARY_PATH and LD_LIBRARY_PATH; `cuda-version-from-build-system` reads
# the toolchain's `nvcc --version`; candle-kernels targets sm_80, and
# NVCC_APPEND_FLAGS adds compute_80 PTX to its static GGUF kernels (libmoe.a),
# which the emulated libcudart runs (a target folder built before that gets
# those objects rebuilt once).
# Not in the default test command: from scratch it builds for tens of minutes
# on two cores (docs/emulator.md has the counts, the times and the failures
# that are left). The exit status is cargo test's.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
. scripts/setup.sh

candle_version="0.11.1"
work="$repo_root/target/candle-core-tests"
mkdir -p "$work"

cargo build --release -p ptx-emu -p ptx-emu-cuda -p ptx-emu-cublas -p ptx-emu-cublaslt -p ptx-emu-curand -p ptx-emu-cudart
emulator_dir="$repo_root/target/release"

# The published source, from the registry cache; a one-dependency manifest
# makes cargo download and unpack it when it is not there yet.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
find_source() {
    ls -d "$cargo_home"/registry/src/*/"candle-core-$candle_version" 2>/dev/null | head -n 1
}
source_dir="$(find_source)"
if [ -z "$source_dir" ]; then
    fetcher="$work/fetch"
    mkdir -p "$fetcher/src"
    cat > "$fetcher/Cargo.toml" <<EOF
[package]
name = "candle-core-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
candle-core = "=$candle_version"
EOF
    touch "$fetcher/src/lib.rs"
    cargo fetch --manifest-path "$fetcher/Cargo.toml"
    source_dir="$(find_source)"
    [ -n "$source_dir" ] || { echo "candle-core-tests: candle-core $candle_version not in $cargo_home/registry/src after cargo fetch" >&2; exit 1; }
fi

# A writable copy (cargo treats the registry's as read-only), made once (delete
# the folder to copy again); `[workspace]` keeps it out of this repository's
# workspace, which encloses target/.
crate="$work/candle-core-$candle_version"
if [ ! -f "$crate/.copied" ]; then
    rm -rf "$crate"
    cp -r "$source_dir" "$crate"
    chmod -R u+w "$crate"
    grep -q '^\[workspace\]' "$crate/Cargo.toml" || printf '\n[workspace]\n' >> "$crate/Cargo.toml"
    touch "$crate/.copied"
fi

# candle-kernels' build script does not declare NVCC_APPEND_FLAGS and its
# compile cache ignores it: objects built without it (machine code only) are
# dropped once, with the build script's fingerprint, so they are rebuilt.
nvcc_append_flags="-gencode=arch=compute_80,code=compute_80"
marker="$work/target/candle-kernels-with-ptx"
if [ -d "$work/target/release" ] && [ ! -f "$marker" ]; then
    rm -f "$work"/target/release/build/candle-kernels-*/out/*.o "$work"/target/release/build/candle-kernels-*/out/*.a
    rm -rf "$work"/target/release/.fingerprint/candle-kernels-*
fi
mkdir -p "$work/target"
echo "candle-kernels' static kernels are built with NVCC_APPEND_FLAGS" > "$marker"

libraries="$emulator_dir:$FUSED_LORA_CUDA_ROOT/lib"
[ -e "$FUSED_LORA_CUDA_ROOT/lib/libnvrtc.so" ] || { echo "candle-core-tests: no libnvrtc.so in $FUSED_LORA_CUDA_ROOT/lib (scripts/setup.sh installs it)" >&2; exit 1; }

if [ "$#" -eq 0 ]; then
    set -- --tests
fi

log="$work/last-run.log"
start=$(date +%s)
set +e
# Only nvcc's folder, cargo's and the system's on PATH, as a user's build would
# have; --no-fail-fast runs every target even when one fails.
env PATH="$FUSED_LORA_CUDA_ROOT/bin:$(dirname "$(command -v cargo)"):/usr/bin:/bin" \
    CUDA_COMPUTE_CAP=80 \
    NVCC_APPEND_FLAGS="$nvcc_append_flags" \
    LIBRARY_PATH="$libraries" \
    LD_LIBRARY_PATH="$libraries" \
    cargo test --release --features cuda --no-fail-fast \
    --manifest-path "$crate/Cargo.toml" --target-dir "$work/target" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - start))

# One line for the whole run: the sum of every test binary's result line.
awk -v secs="$elapsed" '
    /^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^(passed|failed|ignored|filtered)/) { v = $(i - 1); sub(/;/, "", $(i)); n[$(i)] += v }
        }
        binaries++
    }
    / \.\.\. FAILED$/ { sub(/^test /, ""); sub(/ \.\.\. FAILED$/, ""); failed_names = failed_names "\n  " $0 }
    END {
        printf "candle-core-tests: %d test binaries: %d passed, %d failed, %d ignored (%d filtered out); %d s\n",
            binaries, n["passed"], n["failed"], n["ignored"], n["filtered"], secs
        if (failed_names != "") printf "failed:%s\n", failed_names
    }' "$log"
exit "$status"
