#!/usr/bin/env bash
# Every GPU check in one command for a lent GPU machine (Python 3.12 with torch, Triton, lightning,
# torchmetrics, opencv, scikit-learn, msgpack, pytest, hypothesis there; pyzmq, msgpack-numpy, simplejpeg,
# jsonargparse and docstring-parser missing, so they travel as wheels in .whl/).
#
#   bash benchmarks/gpu_checks.sh fetch   # here, with network: download the missing cp312 wheels into .whl/
#   bash benchmarks/gpu_checks.sh run     # there (carry .whl): install them, run every `gpu` test and benchmark
#   bash benchmarks/gpu_checks.sh check   # here, no GPU: syntax, the tests' CPU side, a --device cpu --quick run
#
# `run` writes to $OUT (or ./gpu_results): gpu.txt (nvidia-smi), gpu_tests.log (pytest -m gpu over the whole
# suite: the fused kernel against the torch path, CUDA loader and transfer tests) and benchmarks.txt
# (benchmarks/randomizer_throughput.py: fused kernel vs torch path vs kornia if installed, registered-slot vs
# pinned host-to-GPU copies, TorchTurboDataLoader -> Randomizer end to end). It exits non-zero when a test
# failed. With the device tool: run(command="bash benchmarks/gpu_checks.sh run", carry=[".whl"]).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"  # e.g. PYTHON=.venv/bin/python bash benchmarks/gpu_checks.sh check
WHEELS=(pyzmq msgpack-numpy simplejpeg jsonargparse docstring-parser)

case "${1:-run}" in
fetch)
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    for name in "${WHEELS[@]}"; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$name" \
            || { echo "could not download $name" >&2; exit 1; }
    done
    ls .whl
    ;;
run)
    out="${OUT:-gpu_results}"
    mkdir -p "$out"
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || exit 1
        export PYTHONPATH="/tmp/site:$PWD"
    else
        echo "no .whl/ here: run 'bash benchmarks/gpu_checks.sh fetch' first and carry .whl" >&2
        export PYTHONPATH="$PWD"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
        | tee -a "$out/gpu.txt"
    PYTHONUNBUFFERED=1 timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests 2>&1 \
        | tee "$out/gpu_tests.log"
    tests=${PIPESTATUS[0]}
    PYTHONUNBUFFERED=1 timeout 240 "$PY" benchmarks/randomizer_throughput.py --device cuda 2>&1 \
        | tee "$out/benchmarks.txt"
    bench=${PIPESTATUS[0]}
    [ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
    ;;
check)
    bash -n "$0" || exit 1
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -m pytest -q -p no:cacheprovider --collect-only -m gpu tests 2>&1 | tail -3
    "$PY" -m pytest -q -p no:cacheprovider tests/data/test_triton_kernel.py tests/data/test_batched.py || exit 1
    "$PY" benchmarks/randomizer_throughput.py --device cpu --quick
    ;;
*)
    echo "usage: $0 fetch|run|check" >&2
    exit 2
    ;;
esac
