#!/usr/bin/env bash
# The GPU studies that answer the paper's questions (studies/gpu/*.yaml; docs/reproduction.md), as one script
# for a lent CUDA machine. Each study runs into its own database under $OUT with a wall-clock cap, then the
# effects table (harness.query --summary) and the per-trial figures are printed compactly.
# Usage: OUT=/some/dir [BUDGET_S=600] bash bench/gpu_studies.sh [studies/gpu/NAME.yaml ...]   (default: all)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_studies}
BUDGET_S=${BUDGET_S:-600}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HARNESS_CACHE_DIR=${HARNESS_CACHE_DIR:-/tmp/harness-cache}
PY=${PY:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(studies/gpu/*.yaml)
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
for study in "${studies[@]}"; do
  name=$(basename "$study" .yaml)
  db="sqlite:///$OUT/$name.db"
  echo "== $study (cap ${BUDGET_S}s)"
  start=$(date +%s)
  timeout "$BUDGET_S" $PY -m harness.study "$study" --storage "$db" --quiet --set train.device=cuda 2>&1 | tee "$OUT/$name.txt"
  echo "-- $name: $(( $(date +%s) - start )) s"
  $PY -m harness.query --storage "$db" --study "gpu_$name" --summary 2>&1 | tee "$OUT/$name.summary.txt"
  $PY -m harness.query --storage "$db" --sql "SELECT t.trial_number, t.state, round(t.duration_s, 1) AS s,
    m.name, round(m.value, 4) AS value FROM harness_trials t JOIN harness_metrics m USING (study_name, trial_number)
    WHERE m.name IN ('swd', 'swd_baseline_data', 'swd_baseline_mean_image', 'val_loss', 'sampler_fidelity',
    'train_images_per_s', 'mfu', 'flops_per_image', 'lr') AND m.step IS NULL
    ORDER BY t.trial_number, m.name" 2>&1 | tee "$OUT/$name.trials.txt"
done
