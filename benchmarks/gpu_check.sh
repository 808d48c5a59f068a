#!/usr/bin/env bash
# The GPU check of issue 19 in one command: at most 8 minutes on one H100/H200, no network needed.
#   bash benchmarks/gpu_check.sh [--wheels DIR] OUTDIR     # CUDA: torch, triton, transformers preinstalled
#   bash benchmarks/gpu_check.sh --rehearse OUTDIR         # the same steps on CPU, tiny shapes, Triton's interpreter
# --wheels DIR: the other packages (trl, datasets, liger-kernel, cut-cross-entropy, ...) as wheels made beforehand
# with `pip download` (docs/performance.md gives the command); installed --no-deps into a temporary folder.
# Steps, in priority order, each time-boxed so that one failure costs only its share; each writes into OUTDIR:
#   (0) the compile check for this GPU's architecture, on all cores: Triton's cache is warm for the steps after
#                                                                                   compile_check_gpu.json
#   (a) parity of every objective and engine in bf16 / fp32 / TF32 against the logits path   parity.json
#   (b) the fused LM head at (16384, 3584, 152064) bf16 against cuBLAS, naive CE, TRL, Liger, CCE, in one process,
#       with per-kernel times                                                     fused_linear.csv, fused_kernels.json
#   (c) SFT-step throughput SED / CE (Qwen2.5-1.5B shape, random weights)         sft_step.csv
#   (d) one FSDP2 trainer step, fused head and logits path                        sharded_head.csv
# then summary.md: met / missed per target of the issue, with the measured numbers. Each step's log: OUTDIR/<step>.log.
set -uo pipefail
usage() { echo "usage: bash benchmarks/gpu_check.sh [--wheels DIR | --rehearse] OUTDIR" >&2; exit 2; }
WHEELS="" REHEARSE=0 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || usage; WHEELS="$2"; shift 2 ;;
    --rehearse) REHEARSE=1; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || usage
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
if [ -n "$WHEELS" ]; then WHEELS="$(cd "$WHEELS" && pwd)" || exit 2; fi  # the steps run from the repository root
: > "$OUT/steps.tsv"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT/src:$ROOT/benchmarks:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TRITON_DEFAULT_FP_FUSION=1
cd "$ROOT"

if [ -n "$WHEELS" ]; then
  ls "$WHEELS"/*.whl > /dev/null || { echo "gpu_check.sh: no wheels in $WHEELS" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:$WORK/site"  # after the repo; before the site-packages
fi

# step NAME LIMIT_SECONDS COMMAND...: run it time-boxed, log to OUTDIR/NAME.log, record exit status and seconds
step() {
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "== $name (at most ${limit} s)"
  timeout --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$OUT/steps.tsv"
  echo "   exit $rc after $((SECONDS - t0)) s; $(tail -n 1 "$OUT/$name.log")"
}

if [ "$REHEARSE" = 1 ]; then  # CPU, tiny shapes, the kernels in Triton's interpreter
  export TRITON_INTERPRET=1
  DEV=cpu TINY=--tiny FUSED_SHAPE=16,16,70 REPS=1 SFT=(--preset micro --batch 1 --seq 12 --steps 1 --warmup 1)
  SHARD=(--seq_len 16 --hidden 256 --layers 1 --vocab 128) SHARD_IMPLS=(fused)
  LIMIT_0=120 LIMIT_A=120 LIMIT_B=120 LIMIT_C=120 LIMIT_D=120 LIMIT_E=120
  COMPILE=(--lazy --reuse benchmarks/results/compile_check.json --sample 0 --max-compiles 0)  # no compilation on CPU
else
  DEV=cuda TINY="" FUSED_SHAPE=16384,3584,152064 REPS=3 SFT=(--steps 3 --warmup 2)
  SHARD=(--seq_len 8192) SHARD_IMPLS=(fused logits)
  LIMIT_0=45 LIMIT_A=80 LIMIT_B=185 LIMIT_C=70 LIMIT_D=55 LIMIT_E=35
  COMPILE=(--lazy --jobs "$(nproc)")
fi

"$PY" - "$OUT/env.json" <<'EOF' || exit 2
import json, sys, torch, triton, transformers
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
json.dump({"device": dev, "torch": torch.__version__, "triton": triton.__version__,
           "transformers": transformers.__version__}, open(sys.argv[1], "w"))
print(dev, torch.__version__, triton.__version__)
EOF

ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0); print(c[0] * 10 + c[1])")
step compile "$LIMIT_0" "$PY" benchmarks/compile_check.py --arch "$ARCH" "${COMPILE[@]}" --json "$OUT/compile_check_gpu.json"
step parity "$LIMIT_A" "$PY" benchmarks/gpu_check/parity.py --device "$DEV" $TINY --out "$OUT/parity.json"
step fused "$LIMIT_B" "$PY" benchmarks/benchmark_fused_linear.py --device "$DEV" --shapes "$FUSED_SHAPE" \
  --in-process --rounds 1 --reps "$REPS" --output "$OUT/fused_linear.csv" --kernels "$OUT/fused_kernels.json" \
  --methods bare_matmuls,naive_ce,trl_fused_nll,liger_flce,cce,cce_exact,fused_ce_chunked,fused_sed_chunked,fused_ce_recompute,fused_sed_recompute,fused_sed_stats_chunked
step sft "$LIMIT_C" "$PY" benchmarks/benchmark_sft_step.py --device "$DEV" "${SFT[@]}" --rounds 1 --in-process \
  --output "$OUT/sft_step.csv" --methods hf_ce,fused_ce_chunked,fused_sed_chunked,fused_ce_auto,fused_sed_auto
for impl in "${SHARD_IMPLS[@]}"; do
  args=(benchmarks/benchmark_sharded_head.py --config_name fsdp2 --loss_impl "$impl" --steps 1 "${SHARD[@]}"
        --workdir "$WORK/sharded" --output "$OUT/sharded_head.csv")
  if [ "$REHEARSE" = 1 ]; then  # accelerate starts FSDP on GPUs only: the same script in one plain process
    step "fsdp2_$impl" "$LIMIT_D" "$PY" "${args[@]}"
  else
    limit=$LIMIT_D; [ "$impl" = fused ] || limit=$LIMIT_E
    step "fsdp2_$impl" "$limit" "$PY" -m accelerate.commands.launch --config_file configs/accelerate/fsdp2.yaml \
      --num_processes 1 "${args[@]}"
  fi
done
"$PY" benchmarks/gpu_check/summary.py "$OUT" > "$OUT/summary.log" 2>&1 || { cat "$OUT/summary.log"; exit 1; }
echo "summary: $OUT/summary.md ($SECONDS s in all)"
failed=$(awk -F'\t' '$2 != 0' "$OUT/steps.tsv" | wc -l)
[ "$failed" = 0 ] || { echo "gpu_check.sh: $failed step(s) failed (see their logs in $OUT)" >&2; exit 1; }
