#!/usr/bin/env bash
# Rewrites generated/ (the PTX and the bindgen output the package ships, and
# SOURCES, the stamp of the cuda/ they come from) from cuda/, with the pinned
# nvcc and libclang that scripts/setup.sh installs. Run it after any change to
# cuda/ (a merge included) and commit generated/:
#   scripts/refresh-generated.sh           rewrite generated/
#   scripts/refresh-generated.sh --check   fail if generated/ differs from a fresh build
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
. scripts/setup.sh

mode="${1:-write}"
case "$mode" in
    write | --check) ;;
    *)
        echo "usage: scripts/refresh-generated.sh [--check]" >&2
        exit 2
        ;;
esac

# The shipped target is compute_80; the `from-source` feature makes build.rs
# compile cuda/ even when generated/ already matches it. Its OUT_DIR holds the
# PTX, params.rs and SOURCES; cargo's JSON messages say where it is.
out_dir="$(CUDA_COMPUTE_CAP=80 cargo build --release -p fused-lora --features from-source --message-format=json |
    python3 -c '
import json, sys
# This package'"'"'s build script output is target/release/build/fused-lora-<hash>/out.
dirs = [m["out_dir"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "build-script-executed" and "/build/fused-lora-" in m["out_dir"]]
print(dirs[-1] if dirs else "")
')"
if [ -z "$out_dir" ] || [ ! -f "$out_dir/SOURCES" ]; then
    echo "refresh-generated: could not find the from-source build's output" >&2
    exit 1
fi

fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
mkdir -p "$fresh/ptx"
cp "$out_dir"/*.ptx "$fresh/ptx/"
cp "$out_dir/params.rs" "$out_dir/SOURCES" "$fresh/"

if [ "$mode" = "--check" ]; then
    if ! diff -r -q generated "$fresh"; then
        echo "refresh-generated: generated/ differs from what cuda/ compiles to; run scripts/refresh-generated.sh and commit generated/" >&2
        exit 1
    fi
    echo "refresh-generated: generated/ matches cuda/" >&2
else
    rm -rf generated
    mkdir -p generated
    cp -r "$fresh"/. generated/
    echo "refresh-generated: wrote generated/ from cuda/ ($(ls generated/ptx | wc -l) PTX files); commit it" >&2
fi
