#!/usr/bin/env bash
# Cargo runs every test, bench and example binary through this script when
# scripts/run.sh found a real CUDA driver. Cargo puts its own target
# directories first on LD_LIBRARY_PATH, and the emulator's libcuda.so is built
# there; dropping those directories lets the machine's driver be the one found.
# (Rust binaries need nothing else from them: every Rust dependency is linked in.)
set -euo pipefail
target_dir="${FUSED_LORA_TARGET_DIR:?set by scripts/run.sh}"
kept=()
IFS=':' read -r -a entries <<< "${LD_LIBRARY_PATH:-}"
for entry in "${entries[@]}"; do
    case "$entry" in
        "$target_dir"|"$target_dir"/*) ;;
        *) kept+=("$entry") ;;
    esac
done
LD_LIBRARY_PATH="$(IFS=':'; echo "${kept[*]}")"
export LD_LIBRARY_PATH
exec "$@"
