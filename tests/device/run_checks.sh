#!/usr/bin/env bash
# The GPU checks on a machine that has CUDA PyTorch but neither our other packages nor a package
# index (the lent GPU machines of our workplace): unpack the kit that tests/device/build_kit.py made
# (`make gpu-kit`; it travels in .gpu-kit/), then run
#   1. the GPU tests (`pytest -m gpu`: bf16 over NCCL with ZeRO-2 and ZeRO-3, a worker lost and
#      replaced, serving in process and as a Serve replica on the GPU, evaluation actors on the GPU),
#   2. the FlanT5-XL-sized training throughput benchmark (issue 4's 150 samples/s goal).
# Logs go to $LOGS (default: $OUT, else ./gpu-check-logs). Exit status: 0 when both passed.
#
#   bash tests/device/run_checks.sh            # from the repository root
#   IBLIP_GPU_TESTS_ON_CPU=1 bash tests/device/run_checks.sh   # rehearsal without a GPU (the tests'
#       CPU expectations, the benchmark's --smoke shapes)
set -uo pipefail

KIT=${KIT:-.gpu-kit}
LOGS=${LOGS:-${OUT:-gpu-check-logs}}
SITE=${SITE:-/tmp/iblip-site}
WORLD=${WORLD:-/tmp/iblip-world}
PY=${PY:-python3}
TEST_TIMEOUT=${TEST_TIMEOUT:-330}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-200}
mkdir -p "$LOGS"

for f in site.tar.xz world.tar.xz; do
    if [ ! -f "$KIT/$f" ]; then
        echo "run_checks: $KIT/$f is missing: build the kit with 'make gpu-kit' and carry $KIT" >&2
        exit 2
    fi
done
# unpacked once per machine: a rerun on the same machine skips it
unpack() {  # archive folder
    if [ ! -f "$2/.unpacked" ] || [ "$1" -nt "$2/.unpacked" ]; then
        rm -rf "$2" && mkdir -p "$2" && tar -xJf "$1" -C "$2" && touch "$2/.unpacked" || return 1
    fi
}
start=$(date +%s)
unpack "$KIT/site.tar.xz" "$SITE" && unpack "$KIT/world.tar.xz" "$WORLD" || { echo "run_checks: unpacking failed" >&2; exit 2; }
echo "[checks] kit unpacked in $(( $(date +%s) - start )) s"

export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1
export IBLIP_SMALL_WORLD="$WORLD" HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

$PY - <<'EOF' 2>&1 | tee "$LOGS/environment.txt"
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
print(", ".join(f"{n} {md.version(n)}" for n in ("ray", "deepspeed", "mlflow", "transformers", "tokenizers", "numpy", "pyarrow")))
EOF

if [ "${IBLIP_GPU_TESTS_ON_CPU:-}" != 1 ] && ! $PY -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "run_checks: PyTorch sees no CUDA device here: the GPU tests would only be skipped (IBLIP_GPU_TESTS_ON_CPU=1 rehearses them on CPU)" >&2
    exit 2
fi

status=0
echo "[checks] GPU tests (at most ${TEST_TIMEOUT} s)"
timeout -k 10 "$TEST_TIMEOUT" $PY -m pytest -q -m gpu -p no:cacheprovider tests/integration/test_gpu.py 2>&1 \
    | tee "$LOGS/test_gpu.log" || status=1

echo "[checks] training throughput, FlanT5-XL-sized (at most ${BENCH_TIMEOUT} s)"
bench=()
[ "${IBLIP_GPU_TESTS_ON_CPU:-}" = 1 ] && bench=(--smoke --steps 3 --batch 4)
timeout -k 10 "$BENCH_TIMEOUT" $PY benchmarks/train_throughput_gpu.py "${bench[@]}" 2>&1 \
    | tee "$LOGS/throughput.log" || status=1

echo "[checks] done in $(( $(date +%s) - start )) s, status $status"
exit $status
