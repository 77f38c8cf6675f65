#!/usr/bin/env bash
# The seven demonstration U-Nets (structures annotated only in the two course sample studies), on a CPU.
# Each trains on the Normal study (augmented 256x128 crops) and is scored on the held-out Damaged study.
# Usage: bash training/train_demos.sh COURSE_CACHE.npz RUNS_DIR [seconds per model]
set -euo pipefail
cache=$1 runs=$2 budget=${3:-150}
for s in Ap_Pedicle Ap_Spinous_Process Lat_Anterior_Vertebral_Line Lat_Disk_Height Lat_Posterior_Vertebral_Line \
         Lat_Spinous_Process Lat_Vertebra; do
  spine-train unet --cache "$cache" --structure "$s" --holdout Damaged --run-dir "$runs/$s" \
    --filters 8 --batch-size 8 --repeat 16 --epochs 200 --patience 40 --crop 256 128 --bn-momentum 0.9 \
    --lr 2e-3 --time-budget "$budget"
done
