#!/usr/bin/env bash
# One call, on a machine with a GPU: measured next to modeled.
#
#   scripts/gpu-report.sh OUTDIR          on a machine with an NVIDIA driver
#   scripts/gpu-report.sh --dry OUTDIR    every step on the emulator, small
#                                         (the test suite runs this, so the
#                                         script's code is never untested)
#
# Steps (each one's output is kept in OUTDIR, and a failing step does not stop
# the others, so whatever could be measured is there):
#   1. the whole test suite on the GPU (tests.log);
#   2. meanwhile, on the CPU, the modeled report of the same shapes on the
#      emulator (modeled/: report.csv, report.svg, launches.csv; report.log);
#   3. the criterion benches of those shapes on the GPU (bench-forward.txt,
#      bench-backward.txt: criterion's raw output): the fused forward, the
#      base cuBLAS GEMM alone, the unfused cuBLAS + shrink + expand path, the
#      backward and autograd's five cuBLAS GEMMs;
#   4. measured-vs-modeled.md: the table of both, side by side.
# Sized for under 8 minutes on one H100-class GPU with a 16-core host.
#
# Needs what the README's commands need (Rust, Python 3 for the toolchain
# wheels, gcc) and, on a machine with no network, the crates and .toolchain/
# fetched beforehand (`cargo fetch`, `scripts/setup.sh`).
set -uo pipefail

dry=0
if [ "${1:-}" = "--dry" ]; then
    dry=1
    shift
fi
if [ "$#" -ne 1 ]; then
    echo "usage: scripts/gpu-report.sh [--dry] OUTDIR" >&2
    exit 2
fi
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1"
outdir="$(cd "$1" && pwd)"
cd "$repo_root"

if [ "$dry" = 0 ] && ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    echo "gpu-report: no CUDA driver on this machine (ldconfig knows no libcuda.so.1): nothing can be measured" >&2
    exit 1
fi

started=$(date +%s)
step() { echo "gpu-report: [$(($(date +%s) - started)) s] $*" >&2; }
failed=()

# The report's cases only: Llama-3-8B projections at M = 16 and 4096, r = 16 and 64.
bench_filter='^(forward|backward) bf16 llama3-8b [^ ]+ [^ ]+ M=(16|4096) r=(16|64)/'
if [ "$dry" = 1 ]; then
    export FUSED_LORA_EMULATOR=1
    tests=(-p fused-lora --lib)
    report_args=(--quick)
    # criterion's test mode: the benches' dry run, checked against the reference.
    bench_args=(--test)
else
    # The kernel tests, on the GPU: the workspace's suite without the
    # formatting, clippy and dry-run steps of the full command (they need no
    # GPU), and without the candle build check (a CPU-only compile of minutes).
    tests=(--no-fail-fast -- --skip builds_in_one_graph_with_candle_core_cuda)
    report_args=()
    bench_args=(--warm-up-time 0.3 --measurement-time 0.8 --sample-size 10 --noplot "$bench_filter")
fi

step "modeled report on the emulator, in the background (report.log)"
(
    FUSED_LORA_EMULATOR=1 scripts/run.sh report --out "$outdir/modeled" "${report_args[@]}"
) >"$outdir/report.log" 2>&1 &
report_pid=$!

step "test suite on the device (tests.log)"
if ! scripts/run.sh test "${tests[@]}" >"$outdir/tests.log" 2>&1; then
    failed+=("tests (see tests.log)")
fi

step "waiting for the modeled report"
if ! wait "$report_pid"; then
    failed+=("modeled report (see report.log)")
fi

for bench in forward backward; do
    step "criterion: $bench (bench-$bench.txt)"
    if ! scripts/run.sh bench --bench "$bench" -- "${bench_args[@]}" >"$outdir/bench-$bench.txt" 2>&1; then
        failed+=("$bench benches (see bench-$bench.txt)")
    fi
done

step "measured vs modeled (measured-vs-modeled.md)"
criterion_dir="${CARGO_TARGET_DIR:-$repo_root/target}/criterion"
if scripts/run.sh report --out "$outdir/modeled" --measured "$criterion_dir" >>"$outdir/report.log" 2>&1; then
    cp "$outdir/modeled/measured-vs-modeled.md" "$outdir/measured-vs-modeled.md"
    cat "$outdir/measured-vs-modeled.md"
else
    failed+=("measured-vs-modeled table (see report.log)")
fi

step "done"
if [ "${#failed[@]}" -gt 0 ]; then
    printf 'gpu-report: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
