#!/usr/bin/env bash
# The GPU checks, as one script for a lent CUDA machine (see README "GPU"):
#   1. every network x stem on CUDA in bf16 autocast (bench/gpu_networks.py);
#   2. the default study with a larger model on CUDA, trial time and images/s from the database;
#   3. harness FID vs cleanfid.fid.compute_fid on CUDA (bench/fid.py, Inception v3 architecture);
#   4. the training loop against a bare PyTorch loop, MFU of both (U-ViT base, batch 256; eager and compiled).
#   5. the `base` preset trained by 1 process vs torchrun DDP on every visible GPU (bench/ddp.py; with one
#      GPU only the single-process run, and it says so).
#   6. evaluation share of a default-study trial on CUDA, eager and with eval.sampler_compile (CUDA graphs; the
#      compiled sampler is untested on CPU CI: this is its check).
# Usage: OUT=/some/dir bash bench/gpu_check.sh   (packages missing there can be installed from .whl/)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HARNESS_CACHE_DIR=/tmp/harness-cache
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
echo "== 1. networks x stems, bf16 autocast"
python3 bench/gpu_networks.py 2>&1 | tee "$OUT/gpu_networks.txt"
echo "== 2. gpu_schedule_shift on CUDA, U-ViT 'base' preset at 128 px"
db="sqlite:///$OUT/gpu.db"
time python3 -m harness.study studies/gpu/schedule_shift.yaml --storage "$db" --quiet \
  --set train.device=cuda --set train.batch_size=64 --set train.steps=1000 \
  --set eval.num_samples=512 --set eval.batch_size=256 2>&1 | tee "$OUT/study.txt"
python3 -m harness.query --storage "$db" --sql "SELECT t.trial_number, t.state, round(t.duration_s, 1) AS seconds,
  t.device, m.name, m.value FROM harness_trials t JOIN harness_metrics m USING (study_name, trial_number)
  WHERE m.name IN ('train_images_per_s', 'sample_images_per_s', 'mfu', 'flops_per_image', 'params', 'swd',
  'peak_memory_bytes') ORDER BY t.trial_number, m.name" 2>&1 | tee "$OUT/query.txt"
echo "== 3. FID: harness vs cleanfid.fid.compute_fid on CUDA (Inception v3 architecture, random weights)"
python3 bench/fid.py --device cuda --extractor inception_v3 --n 5120 --batch-size 128 2>&1 | tee "$OUT/fid.txt"
echo "== 4. training loop: harness vs bare PyTorch, MFU against the measured bf16 matmul peak (issue 12: >= 0.45)"
python3 bench/train_loop.py --study studies/gpu/schedule_shift.yaml --device cuda --batch 256 --steps 30 --rounds 5 2>&1 | tee "$OUT/train_loop.txt"
python3 bench/train_loop.py --study studies/gpu/schedule_shift.yaml --device cuda --batch 256 --steps 30 --rounds 3 --compile 2>&1 \
  | tee "$OUT/train_loop_compiled.txt"
echo "== 5. DDP: base preset, 1 process vs torchrun on every visible GPU (global batch 256)"
python3 bench/ddp.py --study studies/gpu/schedule_shift.yaml --device cuda --batch 256 --steps 300 2>&1 | tee "$OUT/ddp.txt"
echo "== 6. evaluation share of a default-study trial on CUDA: eager sampler, then compiled (CUDA graphs)"
python3 bench/eval_share.py --steps 100 --set train.device=cuda 2>&1 | tee "$OUT/eval_share.txt"
python3 bench/eval_share.py --steps 100 --set train.device=cuda --set eval.sampler_compile=true 2>&1 \
  | tee "$OUT/eval_share_compiled.txt"
