#!/usr/bin/env bash
# The GPU check of issue 12: SEDSFTTrainer's fused head under DeepSpeed ZeRO-3 and FSDP2 against the logits
# path, with peak memory, 8k tokens per GPU. Needs CUDA, `pip install -e '.[deepspeed]'`, and runs on every
# visible GPU (set CUDA_VISIBLE_DEVICES to choose). Rows go to benchmarks/results/sharded_head.csv.
#   bash benchmarks/sharded_head_gpu.sh            # about 5 minutes on one H100/H200
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD" HF_HUB_OFFLINE=1
N=$(python -c "import torch; print(torch.cuda.device_count())")
for config in zero3 fsdp2; do
  for impl in fused logits; do
    accelerate launch --config_file "configs/accelerate/$config.yaml" --num_processes "$N" \
      benchmarks/benchmark_sharded_head.py --config_name "$config" --loss_impl "$impl" "$@"
  done
done
