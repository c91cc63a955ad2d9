#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the device tool): bf16/fp16 correctness against an fp32 reference,
# then training throughput and peak memory of DiaBlo vs PEFT LoRA vs the floor on a larger (1.1B, random
# weights) Llama, then DiaBlo on a LLaMA-2-7B-shaped NF4 base (quantized layer by layer; needs bitsandbytes),
# then a short table. Uses the machine's own python3 (it holds torch, transformers, peft,
# safetensors); nothing is downloaded. Usage, from the repository root:
#   bash benchmarks/gpu_check.sh            # writes logs and JSON under ${OUT:-benchmarks/out}
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" \
  || exit 1

echo "== 1. correctness: bf16/fp16 against fp32 =="
$PY benchmarks/cuda_check.py --device cuda 2>&1 | tee "$OUT/gpu_cuda_check.txt"
correct=${PIPESTATUS[0]}

echo "== 2. training throughput and memory, llama-1b (random weights), bf16, batch 16 x 512 =="
$PY benchmarks/train_throughput.py --device cuda --precision bf16 --model llama-1b --batch-size 16 \
  --seq-len 512 --response-len 256 --rounds 10 --warmup 3 --memory-steps 3 \
  --variants floor,diablo,diablo-fused,lora-matched,lora-r32,diablo-dropout,lora-dropout --json "$OUT/gpu_train_throughput.json" \
  2>&1 | tee "$OUT/gpu_train_throughput.txt"
throughput=${PIPESTATUS[0]}

echo "== 3. one job on the node's GPUs: NCCL DDP scaling, FSDP peak memory per device for a 7B shape =="
gpus=$($PY -c "import torch; print(torch.cuda.device_count())")
$PY benchmarks/distributed_scaling.py --device cuda --dtype bfloat16 --strategy ddp --ranks "1,$gpus" \
  2>&1 | tee "$OUT/gpu_distributed_ddp.txt"
ddp=${PIPESTATUS[0]}
$PY benchmarks/distributed_scaling.py --device cuda --dtype bfloat16 --strategy fsdp --shape 7b \
  --ranks "$gpus" --batch-size 8 --seq-len 512 --steps 3 2>&1 | tee "$OUT/gpu_distributed_fsdp.txt"
fsdp=${PIPESTATUS[0]}

echo "== 4. DiaBlo on a LLaMA-2-7B-shaped NF4 base (random weights, built layer by layer), bf16, batch 4 x 512 =="
if $PY -c "import bitsandbytes" 2>/dev/null; then
  $PY benchmarks/quantized_7b.py --device cuda --steps 3 --seq-len 512 --batch-size 4 \
    --json "$OUT/gpu_quantized_7b.json" 2>&1 | tee "$OUT/gpu_quantized_7b.txt"
  nf4=${PIPESTATUS[0]}
else
  echo "bitsandbytes is not installed: skipped" | tee "$OUT/gpu_quantized_7b.txt"
  nf4=skipped
fi

echo "== summary =="
echo "| check | result |"
echo "| --- | --- |"
echo "| bf16/fp16 vs fp32 (cuda_check.py) | $([ "$correct" -eq 0 ] && echo pass || echo FAIL) |"
echo "| throughput run (train_throughput.py) | $([ "$throughput" -eq 0 ] && echo done || echo FAIL) |"
echo "| DDP scaling, FSDP 7B memory (distributed_scaling.py) | $([ "$ddp" -eq 0 ] && [ "$fsdp" -eq 0 ] && echo done || echo FAIL) |"
echo "| 7B-shaped NF4 base, DiaBlo steps and decode (quantized_7b.py) | $([ "$nf4" = skipped ] && echo skipped || { [ "$nf4" -eq 0 ] && echo done || echo FAIL; }) |"
echo
grep -E '^\||step time' "$OUT/gpu_train_throughput.txt"
grep -E '^\|' "$OUT/gpu_distributed_ddp.txt" "$OUT/gpu_distributed_fsdp.txt"
[ -f "$OUT/gpu_quantized_7b.json" ] && cat "$OUT/gpu_quantized_7b.json"
[ "$nf4" = skipped ] && nf4=0
exit $(( correct || throughput || ddp || fsdp || nf4 ))
