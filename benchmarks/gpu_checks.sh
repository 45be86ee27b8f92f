#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (Python 3.12, torch, lightning, torchmetrics, opencv,
# msgpack there; pyzmq, msgpack-numpy, simplejpeg, jsonargparse and docstring-parser missing).
#
#   bash benchmarks/gpu_checks.sh fetch   # here, with network: download those as cp312 wheels into .whl/
#   bash benchmarks/gpu_checks.sh run     # there (carry .whl): install them, run the gpu tests + benchmark
#
# Results go to $OUT (or ./gpu_results) as gpu_tests.log and randomizer.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=(pyzmq msgpack-numpy simplejpeg jsonargparse docstring-parser)

case "${1:-run}" in
fetch)
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for name in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$name" \
            || { echo "could not download $name" >&2; exit 1; }
    done
    ls .whl
    ;;
run)
    out="${OUT:-gpu_results}"
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
    PYTHONUNBUFFERED=1 timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu \
        tests/modules/test_randomizer.py tests/data/test_torch_loader.py 2>&1 | tee "$out/gpu_tests.log"
    tests=${PIPESTATUS[0]}
    PYTHONUNBUFFERED=1 timeout 200 python3 benchmarks/randomizer_throughput.py --device cuda 2>&1 \
        | tee "$out/randomizer.txt"
    exit "$tests"
    ;;
*)
    echo "usage: $0 fetch|run" >&2
    exit 2
    ;;
esac
