#!/usr/bin/env bash
# Installs, into the ignored repo-local folder `.toolchain/`, everything a fresh
# machine without CUDA lacks to build this crate: nvcc and the CUDA headers from
# NVIDIA's PyPI wheels, and libclang for bindgen. Idempotent: a stamp records
# what was installed, so a second run only checks it and returns.
#
# Source it (`. scripts/setup.sh`) to also get the environment it exports.
set -euo pipefail

# The one place the toolchain versions are pinned. CUDA 13.0 is the oldest
# 13.x line: its nvcc writes PTX ISA 9.0, which any driver of the R580 series
# or newer can JIT. A newer nvcc would raise that floor for every user.
FUSED_LORA_CUDA_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88"
FUSED_LORA_LIBCLANG_WHEEL="libclang==18.1.1"
# CUTLASS's headers, for the emulator's test that runs a CUTLASS Sm80 GEMM.
# Installed without dependencies: only `cutlass_library/source/include` is used.
FUSED_LORA_CUTLASS_WHEEL="nvidia-cutlass==4.2.0.0"
# NVIDIA's libnvrtc (it runs without a GPU), for programs that link it: candle's
# CUDA backend uses cudarc's `dynamic-linking`, which links `-lnvrtc` beside the
# emulated `-lcuda -lcublas -lcublasLt -lcurand` (tests/dependent_candle.rs).
# Added to the venv on its own, with its own stamp inside the venv, so that
# installing it never rebuilds the rest of the toolchain.
FUSED_LORA_NVRTC_WHEEL="nvidia-cuda-nvrtc==13.0.88"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
toolchain="$repo_root/.toolchain"
venv="$toolchain/venv"
stamp="$toolchain/installed.txt"
wanted="$FUSED_LORA_CUDA_WHEELS $FUSED_LORA_LIBCLANG_WHEEL $FUSED_LORA_CUTLASS_WHEEL"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "setup: installing CUDA toolchain wheels and libclang into $toolchain" >&2
    rm -rf "$venv"
    mkdir -p "$toolchain"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $FUSED_LORA_CUDA_WHEELS $FUSED_LORA_LIBCLANG_WHEEL
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps $FUSED_LORA_CUTLASS_WHEEL
    echo "$wanted" > "$stamp"
fi

nvrtc_stamp="$venv/installed-nvrtc.txt"
if [ ! -f "$nvrtc_stamp" ] || [ "$(cat "$nvrtc_stamp")" != "$FUSED_LORA_NVRTC_WHEEL" ]; then
    echo "setup: installing $FUSED_LORA_NVRTC_WHEEL into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$FUSED_LORA_NVRTC_WHEEL"
    echo "$FUSED_LORA_NVRTC_WHEEL" > "$nvrtc_stamp"
fi

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cuda_root="$(ls -d "$site"/nvidia/cu1* 2>/dev/null | head -n 1)"
if [ -z "$cuda_root" ] || [ ! -x "$cuda_root/bin/nvcc" ]; then
    echo "setup: nvcc not found under $site/nvidia after install; delete $toolchain and retry" >&2
    exit 1
fi
# The wheels ship only the SONAME files; a linker's `-lnvrtc` / `-lcudart`
# looks for the unversioned names a toolkit's lib/ also has.
for lib in libnvrtc.so.13 libcudart.so.13; do
    if [ -f "$cuda_root/lib/$lib" ] && [ ! -e "$cuda_root/lib/${lib%.13}" ]; then
        ln -s "$lib" "$cuda_root/lib/${lib%.13}"
    fi
done
# build.rs finds these on its own (it looks in .toolchain/); exporting them
# too makes `nvcc` and libclang visible to anything else run from this shell.
export FUSED_LORA_CUDA_ROOT="$cuda_root"
export PATH="$cuda_root/bin:$PATH"
export LIBCLANG_PATH="${LIBCLANG_PATH:-$site/clang/native}"
export FUSED_LORA_CUTLASS_INCLUDE="$site/cutlass_library/source/include"
