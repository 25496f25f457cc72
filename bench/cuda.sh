#!/usr/bin/env bash
# The CUDA check on a lent GPU machine (docs/gpu.md says when and how).
#
#   bash bench/cuda.sh prepare      here, with network: the wheels the GPU machine's Python
#                                   lacks, for its Python 3.12 on x86-64, into .whl/ (ignored)
#   bash bench/cuda.sh run [ARGS]   there, without network: install vipa from this working tree
#                                   (--no-deps) plus those wheels into a private folder, then
#                                   python -m bench.cuda ARGS, results in $OUT (or
#                                   bench/results/cuda/)
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.whl
# vipa's dependencies that the GPU image lacks, or has too old (timm < 1.0.31: Swin does
# not export to ONNX); it has torch, transformers, onnxruntime, pytest.
MISSING=(omegaconf==2.4.0 pycocotools==2.0.11 timm==1.0.31)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

case "${1:-}" in
prepare)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]/#/--platform=}" -d "$WHEELS" "${MISSING[@]}"
    ls -l "$WHEELS"
    ;;
run)
    shift
    site=${VIPA_SITE:-/tmp/vipa-site}
    out=${OUT:-bench/results/cuda}
    mkdir -p "$out"
    python3 -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile \
        --target "$site" . "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    python3 -m bench.cuda --json "$out/cuda.json" --markdown "$out/cuda.md" \
        --plot "$out/cuda-loss.png" "$@" 2>&1 | tee "$out/log.txt"
    ;;
*)
    echo "usage: bash bench/cuda.sh prepare | run [python -m bench.cuda options]" >&2
    exit 2
    ;;
esac
