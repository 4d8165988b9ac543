#!/usr/bin/env bash
# The one script to run on a GPU machine: build the CUDA extension, self-check, the gpu tests,
# the kernel benchmarks, then a short table. Results (JSON) go to ${OUT:-gpu_results}/.
#
#   bash benchmarks/gpu_check.sh            # everything
#   QUICK=1 bash benchmarks/gpu_check.sh    # skip the slow benchmark shapes
#
# Offline machines: put the wheels the build needs (scikit-build-core, pybind11, and optional
# baselines such as liger-kernel) in benchmarks/wheels/; they are installed without an index.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee "$OUT/commit.txt"

if [ -d benchmarks/wheels ]; then
  pip install -q --no-index --find-links benchmarks/wheels benchmarks/wheels/*.whl || true
fi
log "build (ONERL_CUDA=ON)"
ONERL_CUDA=ON ONERL_CUDA_ARCHS="${ONERL_CUDA_ARCHS:-90-real}" \
  pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -20 || { log "BUILD FAILED"; exit 1; }

log "self-check"
python -m onerl_kernels --self-check | tee "$OUT/selfcheck.json" | tail -40

log "gpu tests"
python -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/pytest_gpu.txt"
log "kernel tests on the GPU"
python -m pytest -q -x -p no:cacheprovider tests/test_grpo_loss.py tests/test_advantages.py \
  tests/test_gae.py tests/test_logprobs.py \
  tests/test_paged_kv.py tests/test_paged_attention.py tests/test_sample.py \
  2>&1 | tail -5 | tee "$OUT/pytest_kernels.txt"

run_bench() {  # name, script, args...
  local name=$1; shift
  log "bench $name"
  timeout 300 python "$@" --device cuda --json "$OUT/$name.json" 2>&1 | tail -12 | tee "$OUT/$name.txt"
}
(cd benchmarks && run_bench grpo_loss bench_grpo_loss.py)
(cd benchmarks && run_bench advantages bench_advantages.py)
for extra in gae logprobs paged_attention sample engine; do
  [ -f "benchmarks/bench_$extra.py" ] && (cd benchmarks && run_bench "$extra" "bench_$extra.py")
done
# one PPO step and one GRPO step of the 1.5B-shaped recipes (random weights), time splits
(cd benchmarks && run_bench ppo_step bench_rl_step.py)
(cd benchmarks && run_bench grpo_step bench_rl_step.py --recipe pi1-qwen2.5-math-1.5b)
# onerl eval, greedy MATH500-sized protocol (500 x 3072 tokens), 1.5B shapes, random weights
(cd benchmarks && run_bench eval bench_eval.py)

log "summary (last JSON line of each benchmark)"
for f in "$OUT"/*.txt; do
  case "$f" in *summary.txt|*gpu.txt|*commit.txt) continue;; esac
  echo "-- $(basename "$f" .txt): $(grep '^{' "$f" | tail -1)"
done | tee -a "$OUT/summary.txt"
