#!/bin/bash
# Issue 15's GPU measurements in one command, for the `device` machine (H100/H200, Python 3.12
# with torch). Before: `benchmarks/gpu_wheels.sh` here; then run with `.whl` carried:
#   bash benchmarks/gpu_round.sh tests embed knn step      # about 8 min on an H100
#   bash benchmarks/gpu_round.sh proof                     # the proof protocol on CUDA
# `proof` is protocol 2 with a larger model (base 32) and 4x the steps; it stops itself before
# the 10-minute limit of a call and keeps every finished run in benchmarks/proof_runs_cuda.json,
# which comes back in $OUT: copy it into benchmarks/ and run `proof` again to go on.
# Each step appends its dated section to BENCHMARKS.md (as on any machine); the logs,
# BENCHMARKS.md and the proof state come back through $OUT (or ./gpu_out when $OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_out}"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
rc=0
step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember a failure
  local name=$1
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log" | tail -40
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "== $name FAILED"; rc=1; }
}
for s in "$@"; do
  case $s in
    tests) step tests python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_coreset.py \
      tests/test_embed_pipeline.py tests/test_embeddings.py tests/test_uniqueness.py ;;
    embed) step embed python3 benchmarks/bench_embed.py --device cuda --models base \
      --batch-size 256 --num-workers 12 ;;
    knn) step knn python3 benchmarks/bench_knn.py --backends torch,torch-tf32,torch-bf16 ;;
    step) step step python3 benchmarks/bench_train_step.py --device cuda ;;
    proof) step proof timeout 560 python3 benchmarks/bench_train_proof.py --device cuda \
      --workers 8 --base-channels 32 --steps 9600 --lr 1e-3 --scheduler cosine --epochs 8 \
      --label "2, CUDA, base 32, 9,600 steps" --state benchmarks/proof_runs_cuda.json ;;
    *) echo "unknown step $s (tests, embed, knn, step, proof)"; exit 2 ;;
  esac
done
cp BENCHMARKS.md "$out/"
[ -f benchmarks/proof_runs_cuda.json ] && cp benchmarks/proof_runs_cuda.json "$out/"
exit $rc
