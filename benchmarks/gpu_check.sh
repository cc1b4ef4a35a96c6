#!/usr/bin/env bash
# One prepared GPU check of the `gpu` profile's settings (224 px, batch 256, fused AdamW as in training; at most
# 8 minutes: 120 s cache + 4 x 40 s + 40 s + 160 s of step limits): run on a GPU machine from the repository root, with the data in
# $SKINLIB_DATA_DIR (or data/), and PYTHONPATH=$PWD when skinlib is not installed. Writes JSON figures and logs
# into the folder given as the first argument. Every step has its own time limit, so one slow step cannot eat
# the others' time; a step that fails or times out is recorded and the next one runs.
#
#   PYTHONPATH=$PWD benchmarks/gpu_check.sh "$OUT"            # on the GPU machine
#   SKINLIB_GPU_CHECK_TINY=1 benchmarks/gpu_check.sh /tmp/out # dry run on a CPU with tiny settings
set -uo pipefail
out="${1:?usage: benchmarks/gpu_check.sh OUTPUT_FOLDER}"
mkdir -p "$out"
py="${PYTHON:-python}"
status="$out/steps.txt"
: > "$status"

if [ -n "${SKINLIB_GPU_CHECK_TINY:-}" ]; then   # CPU dry run: same steps, minutes instead of hours
  device=cpu; size=32; images=600; steps=3; workers=0; batches="16"
  study_args=(--profile smoke --epochs 1 --jobs 2 -p epochs 1 -p subset 0.05)
else
  device=cuda; size=224; images=10015; steps=40; workers=8; batches="256"
  study_args=(--profile gpu --epochs 2 --jobs auto)
fi

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$status"
}

"$py" -c "import torch, json; print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available(),
  'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None}))" > "$out/device.json" 2>&1
# the decoded-image cache first, in its own step: the throughput steps then time training, not decoding
step cache 120 "$py" -m skinlib data cache --size "$size"
for model in mobilenet_v3_small mobilenet_v3_small_caco resnet18 efficientnet_b0; do
  for batch in $batches; do
    step "throughput_${model}_b${batch}" 40 "$py" benchmarks/throughput.py --model "$model" --size "$size" \
      --images "$images" --batch-size "$batch" --steps "$steps" --device "$device" --workers "$workers" \
      --json "$out/throughput_${model}_b${batch}.json"
  done
done
step attention_latency 40 "$py" benchmarks/attention_latency.py --variants se caco caco-literal ca --runs 30 --rounds 3
step study_time 160 "$py" benchmarks/study_time.py "${study_args[@]}" --json "$out/study_time.json"
echo "figures in $out"
