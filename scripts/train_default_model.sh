#!/usr/bin/env bash
# Recipe of the embedded default model (edgeseg/assets/): synthetic shapes, a small YOLOv8-seg,
# our trainer, our converter. Needs the convert extra (torch). Not run by make; run it by hand:
#   scripts/train_default_model.sh [OUT=runs/default-model]
# Budget: <= 90 minutes on a 2-core CPU; target: mask mAP50-95 >= 0.75 on the held-out split.
set -euo pipefail
OUT=${1:-runs/default-model}
PY=${PY:-.venv/bin/python}
EDGESEG=${EDGESEG:-.venv/bin/edgeseg}
mkdir -p "$OUT"
# 1. data: 3000 train + 300 val images at 320 px, plus a separate held-out set (other seed)
[ -e "$OUT/synth/synth.yaml" ] || "$EDGESEG" data synth --out "$OUT/synth" --images 3300 --imgsz 320 --seed 0 --val-fraction 0.0909
[ -e "$OUT/heldout/synth.yaml" ] || "$EDGESEG" data synth --out "$OUT/heldout" --images 200 --imgsz 320 --seed 1 --val-fraction 0.5
# 2. the architecture: yolov8-seg at depth 0.33 (as the n scale) and width 0.125 (half of n), 6 classes
"$PY" - "$OUT/arch.yaml" <<'PYEOF'
import sys, yaml
from edgeseg.converters.arch import architecture
arch = architecture("yolov8-seg", "n", 6)
arch["scales"], arch["scale"] = {"t": [0.33, 0.125, 1024]}, "t"
open(sys.argv[1], "w").write(yaml.safe_dump(arch))
PYEOF
# 3. train (resumable: re-run the same command after a stop, or `edgeseg train --resume $OUT/run`)
if [ -e "$OUT/run/weights/last.pt" ]; then
  "$EDGESEG" train --resume "$OUT/run" || true
else
  "$EDGESEG" train --data "$OUT/synth/synth.yaml" --model "$OUT/arch.yaml" --epochs 25 --imgsz 320 --batch 16 \
    --workers 2 --optimizer adamw --lr0 0.002 --warmup-epochs 1 --close-mosaic 5 --patience 25 --seed 0 \
    --project "$OUT" --name run --exist-ok -q
fi
# 4. held-out score, export (ONNX fp32; int8 TFLite calibrated on the val split) and size
"$EDGESEG" val -m "$OUT/run/weights/best.pt" -d "$OUT/heldout/synth.yaml" --imgsz 320
"$EDGESEG" convert "$OUT/run/weights/best.pt" --to onnx --imgsz 320 --out "$OUT/edgeseg-default-320.onnx"
"$EDGESEG" convert "$OUT/run/weights/best.pt" --to tflite --int8 --data "$OUT/synth/synth.yaml" --imgsz 320 \
  --out "$OUT/edgeseg-default-320-int8.tflite"
"$EDGESEG" val -m "$OUT/edgeseg-default-320.onnx" -d "$OUT/heldout/synth.yaml"
"$EDGESEG" val -m "$OUT/edgeseg-default-320-int8.tflite" -d "$OUT/heldout/synth.yaml"
ls -l "$OUT"/edgeseg-default-320*
# 5. ship: cp "$OUT"/edgeseg-default-320.onnx "$OUT"/edgeseg-default-320-int8.tflite edgeseg/assets/
