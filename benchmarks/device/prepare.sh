#!/usr/bin/env bash
# Here, on the CPU machine: stage what a lent GPU machine needs for the suite's GPU figures.
#
# The device tool sends the working tree (64 MiB at most per call, carried folders included). The tracked
# tree is ~120 MB because of the ResNet50 (90 MB), so it cannot travel as it is. This script:
#   1. downloads the CPython 3.12 wheels the device image lacks (onnxruntime-gpu and the service's
#      pure-Python dependencies, at the versions this checkout's .venv runs);
#   2. moves the largest model files (the classifier, 90 MB, and the second-stage U-Net) out of the tree
#      into the kit (`git checkout -- exported_models` puts them back);
#   3. tars wheels + models and splits the tar into parts of 30 MB, one folder each (.devkit/ is
#      git-ignored: p00, p01, ...), so each device call carries one part beside a ~28 MB tree.
# Then follow docs/benchmarks.md, "Running the GPU section on a lent device".
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.devkit
PIP=${PIP:-.venv/bin/pip}
rm -rf "$KIT" && mkdir -p "$KIT/stage/wheels"

names='fastapi|starlette|pydantic|pydantic[-_]core|pydantic[-_]settings|python[-_]dotenv|annotated[-_]types|typing[-_]inspection|uvicorn|python[-_]multipart|pydicom|onnxruntime[-_]gpu'
mapfile -t pins < <("$PIP" freeze 2>/dev/null | grep -iE "^(${names})==")
echo "wheels: ${pins[*]}"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$KIT/stage/wheels" "${pins[@]}"

for model in exported_models/Mask_Classifier/1/model.onnx exported_models/Ap_Vertebra_refine/1/model.onnx; do
    if [ -f "$model" ]; then
        mkdir -p "$KIT/stage/moved/$(dirname "$model")" && mv "$model" "$KIT/stage/moved/$model"
    fi
done
tar -cf "$KIT/kit.tar" -C "$KIT/stage" .
(cd "$KIT" && sha256sum kit.tar > kit.tar.sha256 && split -b 30m -d -a 2 kit.tar part-)
for part in "$KIT"/part-*; do
    n=${part##*-}
    mkdir -p "$KIT/p$n" && mv "$part" "$KIT/p$n/"
done
cp "$KIT/kit.tar.sha256" "$KIT/p00/"
rm -rf "$KIT/stage" "$KIT/kit.tar"
tree_mb=$( { git ls-files -z | xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')  # files moved out are skipped
echo "tracked tree now $((tree_mb / 1000000)) MB (largest models moved out); parts:"
du -sh "$KIT"/p*
