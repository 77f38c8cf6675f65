#!/usr/bin/env bash
# On a lent GPU machine (python3 with torch, no TensorFlow): install the carried Keras wheels,
# train every U-Net with the torch backend, and pack the weights into $OUT in parts of < 16 MB.
# `--stages landmarks` trains the landmark model (spine-train landmarks; a CPU run in runs/landmarks resumes).
# Needs the caches it trains on (spine-train cache ...; see training/gpu_session.py --help) and the keras,
# namex and optree wheels in $WHEELS (default .whl/; training/gpu_prepare.sh stages both for --stages refine).
set -euo pipefail
WHEELS=${WHEELS:-.whl}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=torch PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m training.gpu_session "$@" 2>&1 | tee "$OUT/train.log"
tar czf /tmp/runs.tgz --exclude='last.weights.h5' --exclude='*-holdout/best.weights.h5' runs
split -b 15m /tmp/runs.tgz "$OUT/runs.tgz.part-"
ls -la "$OUT"
