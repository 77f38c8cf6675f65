#!/usr/bin/env bash
# Here, on the CPU machine: stage a lent GPU machine's Ap_Vertebra runs, the second stage and/or a wider
# first stage (training/gpu_train.sh --stages refine / vertebra). Usage: bash training/gpu_prepare.sh [AASCE_DIR]
#
# One device call carries at most 64 MiB, tree included, and the tracked tree is ~120 MB because of the
# ResNet50 (90 MB). This script
#   1. builds the refinement cache and the first-stage cache as JPEG (27 MB instead of 75 MB, 14 MB instead
#      of 37 MB) unless they exist;
#   2. downloads the CPython 3.12 wheels of Keras and the two dependencies the device image lacks
#      (keras, namex, optree, at this .venv's versions);
#   3. puts both into .devkit/train/ (git-ignored: the folder to carry) and moves every exported ONNX file
#      (training needs none) to .devkit/away/ (not carried; `git checkout -- exported_models` puts them back).
# Then, on the device (one call, timeout 600 s):
#   run(command="WHEELS=.devkit/train bash training/gpu_train.sh --stages refine
#        --refine-cache .devkit/train/aasce_refine_q95.npz", carry=[".devkit/train"])
# or, for a 32-filter first stage from scratch (both in one call: split the 600 s with the two budgets):
#   run(command="WHEELS=.devkit/train bash training/gpu_train.sh --stages vertebra --vertebra-filters 32
#        --aasce-cache .devkit/train/aasce_q95.npz --vertebra-budget 400", carry=[".devkit/train"])
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/aasce-train}
PIP=${PIP:-.venv/bin/pip}
KIT=.devkit/train
mkdir -p "$KIT" .devkit/away
cache="$KIT/aasce_refine_q95.npz"
[ -f "$cache" ] || .venv/bin/spine-train cache aasce-refine "$DATA" "$cache" --jpeg-quality 95
first_stage_cache="$KIT/aasce_q95.npz"
[ -f "$first_stage_cache" ] || .venv/bin/spine-train cache aasce "$DATA" "$first_stage_cache" --jpeg-quality 95
mapfile -t pins < <("$PIP" freeze 2>/dev/null | grep -iE '^(keras|namex|optree)==')
echo "wheels: ${pins[*]}"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT" "${pins[@]}"
find exported_models -name '*.onnx' -print0 | while IFS= read -r -d '' model; do
    mkdir -p ".devkit/away/$(dirname "$model")" && mv "$model" ".devkit/away/$model"
done
tree_b=$( { git ls-files -z | xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')  # files moved out are skipped
kit_b=$(du -sb "$KIT" | cut -f1)
echo "tracked tree $((tree_b / 1000000)) MB + carried kit $((kit_b / 1000000)) MB (limit 67 MB)"
