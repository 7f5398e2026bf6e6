#!/usr/bin/env bash
# Leave-one-speaker-out screening of recipes/fsdd.yaml variants, one network each, many at once:
# made for a lent GPU machine (16 cores, one GPU shared by the jobs), where a 30-epoch network
# takes about 70 s beside eleven others, against about 3 minutes on one core here. It screens;
# the figures reported for a recipe come from the recipe itself, run on the CPU (docs/BENCHMARKS.md,
# "Audio in the wild").
#
#   bash bench/gpu_prepare.sh                        # here: .gpudata/ and .whl/ (carry both)
#   bash bench/loso_sweep.sh                         # there: $OUT/sweep.txt, "name seed speaker accuracy seconds"
#   JOBS=my-jobs.txt bash bench/loso_sweep.sh        # lines "name seed speaker [key=value ...]" instead
#
# Environment: OUT (results folder), PAR (jobs at once, 12), BUDGET (seconds; no job starts in
# its last minute, 420), DEVICE (cuda), PYTHON (python3), NO_WHEELS (skip installing .whl/).
set -u
: "${OUT:?set OUT to the folder for sweep.txt}"
cd "$(dirname "$0")/.."
START=$(date +%s)
DEADLINE=$((START + ${BUDGET:-420}))
source bench/gpu_env.sh  # wheels, PYTHONPATH, caches
export ROOT=${ROOT:-$PWD/.gpudata/fsdd/recordings} DEVICE=${DEVICE:-cuda} DEADLINE OUT PYTHON
mkdir -p "$OUT" /tmp/runs

# one short run first, so that the jobs find the recordings decoded in the cache
"$PYTHON" -m cnncli train recipes/fsdd.yaml --set "data.root=$ROOT" --set train.epochs=1 --set train.ensemble=1 \
    --set "train.device=$DEVICE" --out /tmp/runs/warm --overwrite > "$OUT/warm.log" 2>&1

job() {  # name seed speaker [key=value ...]
    local name=$1 seed=$2 speaker=$3
    shift 3
    [ "$(date +%s)" -ge $((DEADLINE - 60)) ] && return
    local out=/tmp/runs/$name-$seed-$speaker started sets=()
    started=$(date +%s)
    for setting in "$@"; do sets+=(--set "$setting"); done
    if ! "$PYTHON" -m cnncli train recipes/fsdd.yaml --set "data.root=$ROOT" --set "data.split.test_pattern=^\d_${speaker}_" \
        --set train.ensemble=1 --set "train.device=$DEVICE" --set train.precision=fp32 --set train.threads=1 \
        --set "train.seed=$seed" "${sets[@]}" --out "$out" --overwrite > "$out.log" 2>&1; then
        echo "$name $seed $speaker FAILED $(tail -1 "$out.log")" >> "$OUT/sweep.txt"
        return
    fi
    local accuracy
    accuracy=$("$PYTHON" -m cnncli eval "$out" --device "$DEVICE" --format json | "$PYTHON" -c \
        "import json, sys; print(json.load(sys.stdin)['accuracy'])")
    echo "$name $seed $speaker $accuracy $(($(date +%s) - started))s" >> "$OUT/sweep.txt"
}
export -f job

if [ -n "${JOBS:-}" ]; then
    cp "$JOBS" /tmp/loso-jobs.txt
else  # the screening of 2026-11-26 (docs/BENCHMARKS.md): seed 0 of every variant first, then seed 1
    for seed in 0 1; do
        while read -r name settings; do
            for speaker in george jackson nicolas theo yweweler; do
                echo "$name $seed $speaker${settings:+ $settings}"  # no trailing blank: xargs -L would join lines
            done
        done <<'VARIANTS'
base
pitch10 augment.pitch=0.1
speed20 augment.speed=0.2
mel16 data.audio.n_mels=16
mfcc data.audio.features=mfcc data.audio.n_mels=40 data.audio.n_mfcc=13
masks augment.time_mask=24 augment.freq_mask=8
ep60 train.epochs=60
VARIANTS
    done > /tmp/loso-jobs.txt
fi
xargs -P "${PAR:-12}" -L 1 bash -c 'job "$@"' _ < /tmp/loso-jobs.txt
echo "done in $(($(date +%s) - START)) s" >> "$OUT/sweep.txt"
