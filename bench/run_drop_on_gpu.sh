#!/usr/bin/env bash
# The GPU half of the token-dropping rows of bench/pruning.py (224x224, difficulty 0.25, same seed as
# run_on_gpu.sh): retrain the unpruned model, prune drop50 and head50+drop50, evaluate. Usage: bash ... OUT_DIR
set -uo pipefail
OUT=${1:?output folder}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
W=/tmp/bench-224-drop
timeout 270 python3 -m bench.pruning --workdir "$W" --img-size 224 224 --difficulty 0.25 --epochs 30 \
  --batch-size 64 --iter-nums 4 --finetune-nums 1 --final-finetune 8 --device cuda --workers 12 \
  --configs drop50,head50+drop50 --stages data,train,prune,evaluate 2>&1 | grep -v "it/s\|batch/s" | tail -5
cp "$W/accuracy.json" "$OUT/accuracy-drop.json"
python3 -c "import json; [print(k, round(v['mAP'], 2), round(v['rank1'], 2)) for k, v in json.load(open('$OUT/accuracy-drop.json')).items()]"
