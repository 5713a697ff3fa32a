#!/usr/bin/env bash
# MME-SID and the E4SRec-style baseline on one CUDA GPU at the paper's budget (4 epochs),
# evaluated on every test user, with the learning curves and one report.
#
#   benchmarks/gpu_finetune.sh WORK OUT
#
# WORK holds what `make -C examples all DATA=beauty` builds before fine-tuning:
#   items.jsonl  sequences.jsonl  embeddings.h5 (collab + text)
#   tok-mmd/tokenizer.safetensors  tok-mmd/sids.h5  [sasrec.safetensors: a SASRec baseline row]
# OUT receives runs/, eval/*.json, curve.json, curve.png, report.md and one log per step.
#
# Both runs train side by side on the one GPU (SmolLM2-135M is far too small to fill an
# H200; two processes keep it busier than one). Measured on an H200 (2026-12-04): ~445
# labels/s per run side by side, so 4 epochs (2,788 steps at batch 32) take ~20 minutes;
# the MAX_MINUTES cap (recorded as stopped_by: time_cap) keeps the whole script under 10
# minutes at ~0.8 epoch. Set MAX_MINUTES=25 for the full 4 epochs.
# Variables: MMESID (default: mmesid), EPOCHS (4), BATCH (global batch, 32), EVAL_EVERY
# (validation every N steps, 400), EVAL_USERS (validation users, 2000), MAX_MINUTES (safety
# cap of each fine-tuning run, 4; a run it stops says so), FT_FLAGS (more `mmesid
# finetune` flags), SEED (0).
set -euo pipefail
WORK=${1:?usage: gpu_finetune.sh WORK OUT}
OUT=${2:?usage: gpu_finetune.sh WORK OUT}
MMESID=${MMESID:-mmesid}
EPOCHS=${EPOCHS:-4}
BATCH=${BATCH:-32}
EVAL_EVERY=${EVAL_EVERY:-400}
EVAL_USERS=${EVAL_USERS:-2000}
SEED=${SEED:-0}
MAX_MINUTES=${MAX_MINUTES:-4}
FT_FLAGS=${FT_FLAGS:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

for f in items.jsonl sequences.jsonl embeddings.h5 tok-mmd/tokenizer.safetensors tok-mmd/sids.h5; do
    [ -f "$WORK/$f" ] || { echo "gpu_finetune.sh: $WORK/$f is missing" >&2; exit 2; }
done
mkdir -p "$OUT/runs" "$OUT/eval"
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }
SECONDS=0

declare -A FLAGS=(
    [mmesid]="--modalities collab,text --sid-init codebook"
    [e4srec]="--modalities collab --sid-init none --no-fusion"
)
pids=()
for run in mmesid e4srec; do
    stamp "finetune $run"
    # shellcheck disable=SC2086  # the flags are words
    $MMESID finetune --sequences "$WORK/sequences.jsonl" --embeddings "$WORK/embeddings.h5" \
        --tokenizer "$WORK/tok-mmd/tokenizer.safetensors" --sids "$WORK/tok-mmd/sids.h5" \
        ${FLAGS[$run]} --epochs "$EPOCHS" --batch-size "$BATCH" --eval-every "$EVAL_EVERY" \
        --eval-users "$EVAL_USERS" --seed "$SEED" --max-minutes "$MAX_MINUTES" $FT_FLAGS -o "$OUT/runs/$run" --overwrite \
        >"$OUT/finetune-$run.log" 2>&1 &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
stamp "fine-tuning done after ${SECONDS}s (failed=$failed)"
tail -n 14 "$OUT"/finetune-*.log
[ "$failed" -eq 0 ] || exit 1

for run in mmesid e4srec; do
    stamp "evaluate $run (all users)"
    $MMESID evaluate "$OUT/runs/$run" --sequences "$WORK/sequences.jsonl" \
        --items "$WORK/items.jsonl" --json "$OUT/eval/$run.json" >"$OUT/evaluate-$run.log" 2>&1
done
$MMESID evaluate --baseline popularity --sequences "$WORK/sequences.jsonl" \
    --items "$WORK/items.jsonl" --json "$OUT/eval/popularity.json" >"$OUT/evaluate-popularity.log" 2>&1
baselines=(--popularity)
if [ -f "$WORK/sasrec.safetensors" ]; then
    $MMESID evaluate --baseline sasrec --checkpoint "$WORK/sasrec.safetensors" \
        --sequences "$WORK/sequences.jsonl" --items "$WORK/items.jsonl" \
        --json "$OUT/eval/sasrec.json" >"$OUT/evaluate-sasrec.log" 2>&1
    baselines+=(--baseline "sasrec=$OUT/eval/sasrec.json")
fi
stamp "evaluation done after ${SECONDS}s"

plot=(--plot "$OUT/curve.png")
python3 -c "import matplotlib" 2>/dev/null || plot=()
$MMESID curve "$OUT/runs/mmesid" "$OUT/runs/e4srec" --sequences "$WORK/sequences.jsonl" \
    "${baselines[@]}" "${plot[@]}" --json "$OUT/curve.json" --title "Beauty on one GPU"
$MMESID report "$OUT"/eval/*.json "$OUT/curve.json" --published beauty \
    --title "mmesid on Beauty, one GPU, $EPOCHS epochs" --markdown "$OUT/report.md"
stamp "all done after ${SECONDS}s"
