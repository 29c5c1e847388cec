#!/usr/bin/env bash
# Download the wheels that the GPU machine's image lacks (or has in another version) for
# benchmarks/gpu.py, into .whl/ at the repository root, for the device tool's `carry`.
#
#   benchmarks/device_wheels.sh [PYVER] [DEST]     # PYVER: 3.12 (the GPU image's Python); DEST: .whl
#
# The GPU image ('cuda', see the device docs' KINDS.md) has torch 2.11, transformers 5.17,
# accelerate 1.15, huggingface_hub 1.33, safetensors, numpy, pillow, rich, shellingham, click,
# zipp, regex, requests, filelock, tqdm, annotated-doc, typing-extensions (version not listed) and
# typer (version not listed), but no diffusers, importlib_metadata, lazy-importer, pydantic,
# pydantic_core, typing-inspection or annotated-types. One version of each is fetched (two stop
# the whole install there). On the machine, with `.whl` in `carry`:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
#
# Only diffusers' and typer's own needs are listed here; torch, transformers and the rest are
# the image's. pydantic_core is the only compiled wheel (cpPYVER, manylinux x86-64).
set -euo pipefail

PYVER="${1:-3.12}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${2:-$ROOT/.whl}"

WHEELS=(
    diffusers==0.42.1
    importlib_metadata==10.2.0   # diffusers imports it; not in the image
    lazy-importer==0.1.0         # importlib_metadata 10.2 needs it (python < 3.15); not in the image
    typer==0.29.2                # the image has a typer of unknown version: carry ours
    pydantic==2.14.3             # typer 0.29 needs pydantic
    pydantic_core==2.50.4        # pydantic 2.14.3 pins it (compiled: cpPYVER)
    typing-inspection==0.4.5     # pydantic needs it
    annotated-types==0.8.0       # pydantic needs it
    typing_extensions==4.16.0    # pydantic 2.14 needs >= 4.16; the image's version is not listed
)

mkdir -p "$DEST"
stale=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [ "$stale" -gt 0 ]; then
    echo "device_wheels.sh: $DEST already holds $stale wheel(s); removing them (one version of each)" >&2
    find "$DEST" -maxdepth 1 -type f -name '*.whl' -delete
fi

# (the grep drops pip's notes about this machine's local index folders that lack a project)
if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$PYVER" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$DEST" "${WHEELS[@]}" 2>&1 | { grep -v 'is neither a file nor a directory' || true; }; then
    echo "device_wheels.sh: pip download failed" >&2
    exit 1
fi

# one version of each project (pip normalises names to lower case with '_')
dups=$(for f in "$DEST"/*.whl; do basename "$f" | cut -d- -f1 | tr 'A-Z.-' 'a-z__'; done | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "device_wheels.sh: more than one wheel of: $dups" >&2
    exit 1
fi
n=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [ "$n" -ne "${#WHEELS[@]}" ]; then
    echo "device_wheels.sh: expected ${#WHEELS[@]} wheels, got $n" >&2
    exit 1
fi

ls -l "$DEST"/*.whl | awk '{printf "%9d  %s\n", $5, $NF}'
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "total: $n wheels, $(awk -v b="$total" 'BEGIN{printf "%.2f MiB", b/1048576}') in $DEST (the device's carry limit: 64 MiB with the repository)"
