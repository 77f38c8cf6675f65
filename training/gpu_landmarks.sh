#!/usr/bin/env bash
# On a lent GPU machine: fine-tune the served landmark model in several variants side by side (one process each:
# a 16-filter U-Net leaves an H200 mostly idle, and each process prepares its batches on its own CPU core), then
# pack the runs into $OUT in parts of < 16 MB. The variants are what the CPU could not afford: whole frames, the
# ends head and the level head trained for hundreds of epochs.
#
# Here, first (the kit is git-ignored; the exported ONNX files are moved out so the tree travels under 64 MiB):
#   spine-train cache aasce-landmarks ../shared/data/aasce-train .devkit/lm/landmarks_q95.npz --jpeg-quality 95
#   PYTHONPATH=. python scripts/onnx_to_keras_weights.py exported_models/Ap_Vertebra_landmarks/1/model.onnx \
#       .devkit/lm/landmarks_served.weights.h5 --landmarks
#   pip download keras namex optree (cp312 wheels, this venv's versions) -d .devkit/lm
# Then: run(command="BUDGET=420 bash training/gpu_landmarks.sh", carry=[".devkit/lm"], timeout_s=600)
# Back here: cat runs.tgz.part-* | tar xz, then `spine-export landmarks --run-dir runs/gpu/<variant> ...` (or average
# checkpoints first: scripts/landmark_soup.py). Each run keeps best.weights.h5 (SMAPE) and best_levels.weights.h5.
set -uo pipefail
KIT=${KIT:-.devkit/lm}
BUDGET=${BUDGET:-420}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=torch PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
common=(landmarks --cache "$KIT/landmarks_q95.npz" --init-landmarks "$KIT/landmarks_served.weights.h5"
    --crop-height 0 --epochs 2000 --patience 2000 --time-budget "$BUDGET")
train() {  # name, extra options
    local name=$1
    shift
    python3 -c 'import sys; from training.cli import train_main; train_main(sys.argv[1:])' \
        "${common[@]}" --run-dir "runs/gpu/$name" "$@" >"$OUT/$name.log" 2>&1
    echo "$name exit $?"
}
# The first lent run (2026-12-04: ends / level at 1e-4, level at 3e-4, whole frames) showed the ends head learning
# from about epoch 10 at 3e-4 and the level head not learning: this is the second run's set.
train ends_lr3 --lr 3e-4 &
train ends_lr3_w2 --lr 3e-4 --ends-loss-weight 2 &
train ends_lr3_w2_crop --lr 3e-4 --ends-loss-weight 2 --crop-height 256 --batch-size 16 &
wait
nvidia-smi --query-gpu=memory.used --format=csv
for log in "$OUT"/*.log; do echo "== $log"; grep -E "epoch|Error|error" "$log" | tail -4; done
tar czf /tmp/runs.tgz --exclude=last.weights.h5 runs/gpu
split -b 15m /tmp/runs.tgz "$OUT/runs.tgz.part-"
ls -la "$OUT"
