#!/usr/bin/env bash
# The GPU half of bench/pruning.py --preset gpu: data, training (both recipes), pruning, the control and accuracy at
# 224x224 for two synthetic difficulties.
# Speed is measured afterwards on the CPU (python -m bench.pruning --stages speed,seed --workdir ...).
# Usage: bash bench/run_on_gpu.sh OUT_DIR
set -uo pipefail
OUT=${1:?output folder}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
for d in 0.05 0; do
  W=/tmp/bench-224-d$d
  timeout 280 python3 -m bench.pruning --preset gpu --workdir "$W" --difficulty "$d" --device cuda --workers 12 \
    --stages data,train,prune,evaluate 2>&1 | grep -v "it/s\|batch/s" | tail -5
  cp "$W/accuracy.json" "$OUT/accuracy-d$d.json" 2>/dev/null
  cp "$W/runs/unpruned/train.json" "$OUT/train-d$d.json" 2>/dev/null
done
# bring back the checkpoints of the variant whose unpruned mAP is in the benchmark's 50-90 band (fp16 to fit)
python3 - "$OUT" <<'PY'
import json, sys, pathlib
from safetensors import safe_open
from safetensors.torch import save_file
out = pathlib.Path(sys.argv[1])
best = None
for f in sorted(out.glob('accuracy-d*.json')):
    m = json.loads(f.read_text())['unpruned']['mAP']
    print(f.name, 'unpruned mAP', round(m, 2))
    if best is None or abs(m - 70) < abs(best[1] - 70):
        best = (f.stem.split('-')[1], m)
if best:
    d = best[0][1:]
    (out / 'chosen.txt').write_text(d)
    for name in ('unpruned', 'unpruned+ft', 'token40', 'head67', 'head67+token40', 'head50+drop50'):
        src = pathlib.Path(f'/tmp/bench-224-d{d}/runs/{name}') / ('best.safetensors' if name == 'unpruned' else 'pruned.safetensors')
        if src.exists():
            with safe_open(str(src), 'pt') as fh:
                meta = fh.metadata()
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
            save_file(tensors, str(out / f'{name.replace("+", "_")}.safetensors'), metadata=meta)
PY
ls -la "$OUT"
