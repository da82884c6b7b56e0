#!/usr/bin/env bash
# One command for a machine with a CUDA GPU, PyTorch, Triton, pytest and nvcc but no network:
#   bash benchmarks/gpu_check.sh OUTDIR
# installs softdiff without build isolation or dependency resolution, builds csrc/, runs the test suite
# (GPU tests included), the kernel benchmark for each backend, the training-step and NFE benchmarks, the demo and
# the demo preset with the small net measured by restore_depth.py,
# and writes a report into OUTDIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash benchmarks/gpu_check.sh OUTDIR}"
python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || { echo "gpu_check.sh: no CUDA GPU visible to torch" >&2; exit 2; }
mkdir -p "$out"
report="$out/report.md"
status=0
step() {  # step NAME COMMAND...: run, log to OUTDIR/NAME.log, record the exit code
  local name=$1
  shift
  local start=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local code=$?
  [ $code -eq 0 ] || status=1
  printf -- '- %s: exit %d, %ds (log: %s.log)\n' "$name" "$code" $((SECONDS - start)) "$name" | tee -a "$report"
  tail -n 5 "$out/$name.log"
}
{
  echo "# softdiff GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
  python -c "import torch, triton; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton.__version__}')"
  nvcc --version | tail -n 2 | head -n 1
  echo
} >"$report"
arch=$(python -c "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}.{minor}')")
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}"
export MAX_JOBS="${MAX_JOBS:-8}"
step install env SOFTDIFF_CUDA_BUILD=1 python -m pip install --no-build-isolation --no-deps -e .
step backends python -m softdiff_kernels
step tests python -m pytest -q -x
for backend in cuda triton; do
  step "kernels-$backend" env SOFTDIFF_BACKEND=$backend python benchmarks/kernels.py --out "$out/kernels-$backend"
done
step train-speed python benchmarks/train_speed.py --sizes tiny small paper --batch 128 --amp --channels-last --compile \
  --out "$out/train_speed"
step nfe-speed python benchmarks/nfe_speed.py --out "$out/nfe_speed"
step demo python -m softdiff.demo --out "$out/demo"
# Does capacity fix the demo's mid-t outlines (README "Training")? The demo preset with the small net, then where
# along t it stops knowing the data. The run (checkpoints of ~100 MB) stays outside OUTDIR; its last grid is copied.
run_dir="${TMPDIR:-/tmp}/softdiff-demo-small"
step demo-small python -m softdiff.train --out "$run_dir" --net small --steps 4000 --sample-every 4000 --ckpt-every 1000
cp "$run_dir/samples/step-00004000.png" "$out/demo-small-samples.png" 2>/dev/null
step restore-depth python benchmarks/restore_depth.py --ckpt "$run_dir" --out "$out/restore_depth"
echo >>"$report"
for backend in cuda triton; do
  [ -d "$out/kernels-$backend" ] && cat "$out/kernels-$backend"/*.md >>"$report"
done
[ -d "$out/train_speed" ] && cat "$out/train_speed"/*.md >>"$report"
[ -d "$out/restore_depth" ] && cat "$out/restore_depth"/*.md >>"$report"
echo "report: $report"
exit $status
