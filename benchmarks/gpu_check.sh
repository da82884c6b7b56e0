#!/usr/bin/env bash
# The GPU checks, for a machine with a CUDA GPU, PyTorch, Triton, pytest and nvcc but no network, sized for short
# leases: each call runs within a time budget and leaves at most four files in OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR [STAGE ...]        (default stages: core speed)
#
# Stages, in the order given:
#   core   install (builds csrc/), the backends found, the GPU tests (kernels, CUDA extension, operators on CUDA),
#          the kernel benchmark for the cuda and triton backends                       (about 4-5 minutes)
#          The report says whether the extension softdiff_kernels._C loaded; after an install that asked for its
#          build (core always; tests when it installs) the tests run with SOFTDIFF_EXPECT_CUDA_EXTENSION=1, so
#          that a missing extension fails tests/test_cuda_extension.py instead of skipping it.
#   speed  benchmarks/train_speed.py: tiny, small and paper nets, batch 128, fused vs reference, bf16,
#          channels-last, and all three with torch.compile                               (about 3-5 minutes)
#   train  the shapes preset with the small net at batch 128 (does a GPU's budget give recognisable shapes?),
#          restore_depth.py and nfe_speed.py on that run                                 (about 4-6 minutes)
#   tests  the whole test suite (pytest-xdist when present)
# A stage installs softdiff first when it is not importable (a fresh machine), so stages can run in separate calls.
# With 15 minutes of device time (a minute or two of it the machine's start): `core speed` in one call with
# GPU_CHECK_BUDGET_S=500. `train` needs a second call within 30 s (the machine is released when idle, and a
# fresh one costs its start and the csrc build again) and 6 minutes or more of device time left.
#
# Budget: GPU_CHECK_BUDGET_S seconds for the whole call (default 480). Every step runs under `timeout` with its own
# cap, cut to what is left; a step with under 30 s left is skipped and reported as such. The report is always written.
#
# OUTDIR receives:
#   report.md          machine, versions, each step's exit status and time, then every result table
#   results.tar.gz     every step's log and result folder (kernels, train_speed, restore_depth, nfe_speed, the
#                      training log); unpack with tar xzf into benchmarks/results/<name>
#   small-samples.png  the last sample grid of the train stage's run
#   restore-depth.png  restore_depth.py's picture of that run
# The train stage's checkpoints stay in GPU_CHECK_RUN_DIR (default /tmp/softdiff-gpu-small): calling the stage again
# on the same machine resumes that run (GPU_CHECK_TRAIN_ARGS, e.g. "--steps 12000", is appended to its flags).
#
# GPU_CHECK_COMMIT names the commit in the report where the tree has no .git (a copied working tree).
# GPU_CHECK_ALLOW_CPU=1 runs without a GPU: it tests this script's plumbing, not the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash benchmarks/gpu_check.sh OUTDIR [core] [speed] [train] [tests]}"
shift
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(core speed)
for stage in "${stages[@]}"; do
  case $stage in core | speed | train | tests) ;; *) echo "gpu_check.sh: unknown stage '$stage'" >&2 && exit 2 ;; esac
done
py="${PYTHON:-$(command -v python3 || command -v python)}"
arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability() if torch.cuda.is_available() else '')")
if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ] && [ -z "$arch" ]; then
  echo "gpu_check.sh: no CUDA GPU visible to torch (GPU_CHECK_ALLOW_CPU=1 tests the script without one)" >&2
  exit 2
fi
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-480}))
run_dir="${GPU_CHECK_RUN_DIR:-/tmp/softdiff-gpu-small}"
work=$(mktemp -d)
mkdir -p "$out"
report="$out/report.md"
status=0

step() { # step NAME CAP_SECONDS COMMAND...: run under the budget, log to work/NAME.log, record the exit status
  local name=$1 cap=$2
  shift 2
  local left=$((deadline - SECONDS))
  if [ $left -lt 30 ]; then
    printf -- '- %s: skipped, %d s of the budget left\n' "$name" "$left" | tee -a "$report"
    status=1
    return 1
  fi
  [ "$cap" -le $((left - 5)) ] || cap=$((left - 5))
  local start=$SECONDS
  # In the background and waited for: bash runs a trap (SIGTERM from outside) only between foreground commands.
  timeout --kill-after=10 "$cap" "$@" >"$work/$name.log" 2>&1 &
  child=$!
  wait $child
  local code=$?
  child=
  local verdict="exit $code"
  [ $code -ne 124 ] || verdict="stopped at its ${cap} s cap"
  [ $code -ne 137 ] || verdict="killed 10 s after its ${cap} s cap"
  [ $code -eq 0 ] || status=1
  printf -- '- %s: %s, %d s\n' "$name" "$verdict" $((SECONDS - start)) | tee -a "$report"
  tail -n 3 "$work/$name.log"
  return $code
}

finish() { # the tables and the archive, also when the call is stopped from outside (SIGTERM)
  trap - EXIT TERM INT
  echo >>"$report"
  for table in "$work"/kernels-*/*.md "$work"/train_speed/*.md "$work"/restore_depth/*.md "$work"/nfe_speed/*.md; do
    [ -f "$table" ] && { cat "$table" && echo; } >>"$report"
  done
  tar czf "$out/results.tar.gz" -C "$work" .
  rm -rf "$work"
  echo "report: $report"
  cat "$report"
}

cuda_build_requested=0
install_softdiff() { # install softdiff from this tree and build csrc/ (ninja rebuilds only what changed); if the
  # build fails, install without it so that the Triton and PyTorch paths are still measured (the log says why)
  cuda_build_requested=1
  step install 240 env SOFTDIFF_CUDA_BUILD=1 "$py" -m pip install --no-build-isolation --no-deps -e . ||
    step install-without-csrc 60 env SOFTDIFF_CUDA_BUILD=0 "$py" -m pip install --no-build-isolation --no-deps -e .
}

cuda_extension_check() { # after the install: whether softdiff_kernels._C loads, in the report; where this call
  # requested its build, the tests are told to expect it (tests/test_cuda_extension.py then fails, not skips,
  # without it)
  local loaded
  loaded=$("$py" -c "from softdiff_kernels.dispatch import cuda_extension_status as s; ok, why = s()
print(('loaded' if ok else 'NOT loaded') + ' (' + why + ')')" 2>&1 | tail -n 1)
  if [ "$cuda_build_requested" = 1 ]; then
    export SOFTDIFF_EXPECT_CUDA_EXTENSION=1
    loaded="$loaded; its build was requested: SOFTDIFF_EXPECT_CUDA_EXTENSION=1 for the tests"
  fi
  printf -- '- cuda-extension: %s\n' "$loaded" | tee -a "$report"
}

ensure_installed() { # a fresh machine: install once
  "$py" -c "import softdiff, softdiff_kernels" 2>/dev/null || install_softdiff
}

{
  echo "# softdiff GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), stages: ${stages[*]}"
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
  "$py" -c "import sys, torch, triton; print(f'python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton.__version__}')"
  nvcc --version 2>/dev/null | tail -n 2 | head -n 1
  if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
  fi
  echo "commit: ${GPU_CHECK_COMMIT:-${commit:-unknown (no git here: pass GPU_CHECK_COMMIT)}}"
  echo
} >"$report"
[ -z "$arch" ] || export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}"
export MAX_JOBS="${MAX_JOBS:-8}" PYTHONUNBUFFERED=1

child=
trap 'echo "- stopped from outside" >>"$report"; [ -z "$child" ] || kill "$child" 2>/dev/null; wait; finish; exit 143' \
  TERM INT

for stage in "${stages[@]}"; do
  echo "## stage $stage" >>"$report"
  case $stage in
  core)
    install_softdiff
    cuda_extension_check
    step backends 60 "$py" -m softdiff_kernels
    # The CUDA extension's tests first; every failure reported (not just the first), each test capped when
    # pytest-timeout is there (a first GPU run may hang where the CPU never did).
    per_test=()
    ! "$py" -c "import pytest_timeout" 2>/dev/null || per_test=(--timeout=90)
    step gpu-tests 200 "$py" -m pytest -q --maxfail=20 -rfE --durations=10 -p no:cacheprovider "${per_test[@]}" \
      tests/test_cuda_extension.py tests/test_operators.py tests/test_kernels.py tests/test_dct.py
    for backend in cuda triton; do
      step "kernels-$backend" 120 env SOFTDIFF_BACKEND=$backend "$py" benchmarks/kernels.py --out "$work/kernels-$backend"
    done
    ;;
  speed)
    ensure_installed
    step train-speed 300 "$py" benchmarks/train_speed.py --sizes paper small tiny --batch 128 --amp --channels-last \
      --combined --out "$work/train_speed"
    ;;
  train)
    ensure_installed
    step train-small 300 "$py" -m softdiff.train --preset shapes --out "$run_dir" --net small --batch 128 --steps 6000 \
      --sample-every 2000 --ckpt-every 500 ${GPU_CHECK_TRAIN_ARGS:-}
    mkdir -p "$work/train-small"
    cp "$run_dir/log.jsonl" "$work/train-small/" 2>/dev/null
    last_grid=$(ls "$run_dir"/samples/*.png 2>/dev/null | tail -n 1)
    [ -z "$last_grid" ] || cp "$last_grid" "$out/small-samples.png"
    step restore-depth 120 "$py" benchmarks/restore_depth.py --ckpt "$run_dir" --n 128 --out "$work/restore_depth"
    cp "$work"/restore_depth/*.png "$out/restore-depth.png" 2>/dev/null
    step nfe-speed 150 "$py" benchmarks/nfe_speed.py --ckpt "$run_dir" --ckpt-samples 500 --ckpt-samplers \
      momentum,heun --ckpt-nfe 10,35,100 --threads 8 --out "$work/nfe_speed"
    ;;
  tests)
    ensure_installed
    cuda_extension_check
    parallel=()
    ! "$py" -c "import xdist" 2>/dev/null || parallel=(-n 8)
    step tests 600 "$py" -m pytest -q -x -p no:cacheprovider "${parallel[@]}"
    ;;
  esac
done

finish
exit $status
