#!/usr/bin/env bash
# On the lent GPU machine, after every .devkit/pNN part was copied to /tmp/kit (docs/benchmarks.md):
# join and check the kit, install the wheels beside the image's Python, point onnxruntime at the image's
# CUDA 13 / cuDNN 9 (nvidia-* pip packages), and run the suite's GPU and HTTP sections into $OUT.
set -euo pipefail
KIT=/tmp/kit
cat "$KIT"/part-* > "$KIT/kit.tar"
(cd "$KIT" && sha256sum -c kit.tar.sha256)
tar -xf "$KIT/kit.tar" -C "$KIT"
[ -d "$KIT/moved" ] && cp -r "$KIT/moved/." .  # the model files prepare.sh took out of the tree
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia_dir=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])')
LD_LIBRARY_PATH=$(find "$nvidia_dir" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.__file__, o.get_available_providers())'
# GPU section (per model, IOBinding, cuDNN search) and a live spine-serve on CUDA; no Keras on the device.
python3 -m benchmarks run --no-keras --sections gpu,http --baseline-ref none --no-isolation --no-int8 \
    --require-gpu --json "$OUT/gpu.json" --markdown "$OUT/gpu.md" "$@" 2>&1 | tee "$OUT/gpu.log"
