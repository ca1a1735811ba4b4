#!/usr/bin/env bash
# The one entry point of the README's commands:
#   scripts/run.sh example [args...]   run the main example
#   scripts/run.sh test    [args...]   run the whole test suite (with no
#                                      args: first cargo fmt --check and
#                                      clippy -D warnings, last
#                                      scripts/gpu-report.sh's dry run, which
#                                      runs the benches' dry run)
#   scripts/run.sh report  [args...]   the modeled performance report (always
#                                      on the emulator: it counts and models)
#   scripts/run.sh bench   [args...]   cargo bench on the device picked as for
#                                      the tests (scripts/gpu-report.sh uses it)
# All install what a fresh machine lacks (scripts/setup.sh), build the
# emulator's libcuda.so, and pick the device: the real CUDA driver when the
# machine has one, the emulator otherwise (FUSED_LORA_EMULATOR=1 forces it).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
. scripts/setup.sh

what="${1:-}"
shift || true

# The emulator is a driver too: build it first (the executor with its
# `ptx-emu` runner, and every library it impersonates, all into one folder),
# so the kernel tests always have a device and the emulator's own tests have
# their libraries.
cargo build --release -p ptx-emu -p ptx-emu-cuda -p ptx-emu-cublas -p ptx-emu-cublaslt -p ptx-emu-curand -p ptx-emu-cudart
emulator_dir="$repo_root/target/release"

# The report counts launches: it needs the emulator whatever the machine has.
if [ "$what" = "report" ]; then
    export FUSED_LORA_EMULATOR=1
fi

if [ "${FUSED_LORA_EMULATOR:-0}" != "1" ] && ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    echo "run.sh: using the machine's CUDA driver (set FUSED_LORA_EMULATOR=1 to use the emulator)" >&2
    # Keep the emulator built under target/ from shadowing the real driver.
    export FUSED_LORA_TARGET_DIR="$repo_root/target"
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$repo_root/scripts/system-driver-runner.sh"
else
    echo "run.sh: no CUDA driver on this machine; kernels run on the emulator ($emulator_dir/libcuda.so)" >&2
    export LD_LIBRARY_PATH="$emulator_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# In these commands a kernel test that finds no device fails instead of skipping.
export FUSED_LORA_REQUIRE_DEVICE=1

case "$what" in
    example)
        exec cargo run --release --example train -- "$@"
        ;;
    test)
        # Held to initcheck on shared memory too (stricter than
        # compute-sanitizer's initcheck, which looks at global memory only, and
        # than the emulator's default): no kernel these tests run reads a
        # shared byte it did not write.
        export PTX_EMU_INITCHECK_SHARED="${PTX_EMU_INITCHECK_SHARED:-1}"
        if [ "$#" -gt 0 ]; then
            exec cargo test --workspace --release "$@"
        fi
        # The habits Rust users expect, checked first (they fail fast):
        # the tree formatted as rustfmt.toml says, and clippy clean.
        cargo fmt --all --check
        # The slowest test, tests/dependent_candle.rs, builds candle from
        # scratch in its own target folder (target/dependents/candle), much of
        # it one long nvcc or rustc job at a time. Start that build now, in the
        # background, so it fills the cores clippy and the tests below leave
        # idle; the test itself runs last, waits on cargo's lock of that folder
        # if the build is still going, and finds it built. If the build fails
        # here, the test reports why.
        prebuild_log="$repo_root/target/dependents/candle-prebuild.log"
        mkdir -p "$(dirname "$prebuild_log")"
        candle_test="$(cargo test --workspace --release --test dependent_candle --no-run --message-format=json |
            sed -n 's/.*"executable":"\([^"]*dependent_candle[^"]*\)".*/\1/p')"
        "$candle_test" --ignored --exact prebuild_candle_dependent >"$prebuild_log" 2>&1 &
        prebuild_pid=$!
        trap 'kill "$prebuild_pid" 2>/dev/null || true' EXIT
        cargo clippy --workspace --release --all-targets -- -D warnings
        # Every test but the candle dependent's, then that one last: its
        # background build has the whole suite to overlap.
        cargo test --workspace --release -- --skip candle_cuda_backend_runs_beside_fused_lora
        cargo test --workspace --release --test dependent_candle
        # The Hopper paths: the forward's and the backward's kernel tests
        # (tests/forward.rs, tests/backward.rs, tests/backward_few_sms.rs)
        # again on the emulator presenting compute capability 9.0, where the
        # single-adapter forward and dX take the sm_90a kernels wherever TMA
        # can read the operands and everything else the mma.sync kernels
        # (tests/forward_hopper.rs and tests/backward_hopper.rs check which
        # path each launch took). What the crate reads of the device to
        # choose its launches is the SM count and the L2 size (the same on
        # both) and whether it is a 9.0 one, so a test that launches no
        # sm_90a kernel there launches what it did in the first pass, the same
        # PTX on the same grids: those are skipped here (by the launch logs
        # of every test at 9.0 and 8.0): f32 throughout, the backward's
        # decode-sized split, the rank-side launches alone, dropout, the
        # 64x64 and 128-row tile comparisons. (The forward's tests with
        # decode-sized cases run: on 9.0 those take the one-launch decode
        # kernel in clusters.) A new test runs in both passes
        # unless a name here matches it. One cargo invocation, the first
        # pass's build.
        PTX_EMU_COMPUTE_CAPABILITY=90 cargo test --workspace --release \
            --test forward --test backward --test backward_few_sms -- \
            --skip f32_kernels:: --skip ::f32 --skip expand_ --skip decode_split \
            --skip shrink --skip bad_index:: \
            --skip tile_same_bits --skip oracle_matches --skip accumulate:: --skip dropout \
            --skip grouped_ranks:: --skip many_rows:: --skip multi_adapter:: --skip recomputed_p \
            --skip small_dx_with_da_in_last_row --skip split_mode:: --skip wide_rank_tiles \
            --skip dx_tile --skip big_dx_with_da_warp_mode --skip big_dx_with_da_split \
            --skip wide_dx_with_da_warp_mode --skip wide_da_warp_mode
        # The GPU report's dry run: each of its steps on the emulator, small —
        # the benches in criterion's test mode (every case's variants once, on
        # small stand-in shapes, checked against the reference), the modeled
        # report on one small shape, and the measured-vs-modeled join.
        exec scripts/gpu-report.sh --dry "$repo_root/target/gpu-report-dry"
        ;;
    report)
        # Built for the workspace, as the test command builds its examples:
        # `cargo run` would build the one package alone, whose dependency
        # features differ, and compile cudarc and the crate again.
        cargo build --release --workspace --example perf_report
        exec "${CARGO_TARGET_DIR:-$repo_root/target}/release/examples/perf_report" "$@"
        ;;
    bench)
        # For the workspace, as the tests build (see `report`): the root
        # package alone resolves cudarc's features otherwise and rebuilds it.
        exec cargo bench --workspace "$@"
        ;;
    *)
        echo "usage: scripts/run.sh example|test|report|bench [args...]" >&2
        exit 2
        ;;
esac
