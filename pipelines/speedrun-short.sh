#!/usr/bin/env bash
# speedrun-short.sh - gpt-*'s time-to-loss run on one GPU: the record's model
# (gpt-init --preset record-2025-01-04) trained with the record's schedules
# compressed to STEPS steps (gpt-sched --preset record-2025-01-04 --steps STEPS
# --eval-every EVAL_EVERY), 8 x 65,536 tokens per step, validation on the first
# VAL_TOKENS tokens of the validation text; prints the validation curve and the
# training time (spec 11: evaluations excluded; also from step 10 on, as the
# record's clock counts).
#
#   pipelines/speedrun-short.sh [WORKDIR]          (default: ./speedrun-short)
#
# Environment (defaults in brackets):
#   BUILD        build directory [build]
#   TRAIN_TEXT   training text files, space-separated, tokenized in order
#                [.carry/gutenberg_en_train_*.txt.zst, else
#                ../shared/data/gutenberg_en_train_*.txt.zst, else
#                data/sample/train.txt.zst]
#   VAL_TEXT     validation text [.carry/gutenberg_en_val.txt.zst, else
#                ../shared/data/gutenberg_en_val.txt.zst; without one, the first
#                VAL_TOKENS + 2 tokens of the training text]
#   DATA_DIR     token files made by tools/record-data.sh [WORKDIR/data; made
#                when missing or out of date]
#   INIT         initial weights [gpt-init's record preset, seed 0, written to
#                WORKDIR/init.safetensors]
#   STEPS [300]  EVAL_EVERY [50]  VAL_TOKENS [1179648 = 18 x 65,536]
#   BATCH_TOKENS [524288]  SEQ_LEN [65536]  DEVICE [cuda]
#   OUTPUT       write the final weights here [none]
#   STAGE        'prepare': stop after the data, weights and schedule (used by
#                bench/time-to-loss.sh) [run everything]
# Writes WORKDIR/schedule.txt and WORKDIR/train.jsonl (gpt-train's JSON lines);
# gpt-train's stderr goes to WORKDIR/train.stderr. About 6 minutes on an H200
# (300 steps of ~1.1 s, 7 evaluations).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-speedrun-short}
B=${BUILD:-$top/build}
B=$(cd "$B" 2>/dev/null && pwd) || { echo "speedrun-short.sh: build directory ${BUILD:-build} not found" >&2; exit 1; }
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
steps=${STEPS:-300} every=${EVAL_EVERY:-50} vtok=${VAL_TOKENS:-1179648}
batch=${BATCH_TOKENS:-524288} seq=${SEQ_LEN:-65536} device=${DEVICE:-cuda}
case "$steps$every$vtok$batch$seq" in *[!0-9]*) echo "speedrun-short.sh: STEPS, EVAL_EVERY, VAL_TOKENS, BATCH_TOKENS, SEQ_LEN are integers" >&2; exit 2 ;; esac
say() { echo "speedrun-short: $*" >&2; }
mkdir -p "$work"
work=$(cd "$work" && pwd)
cd "$top"

pick() { # the first pattern that matches readable files
	local p f
	for p in "$@"; do
		for f in $p; do
			[ -r "$f" ] && { echo $p; return; }
		done
	done
}
data=${DATA_DIR:-$work/data}
if [ -z "${DATA_DIR:-}" ] || [ ! -r "$data/val.bin.zst" ]; then
	train_text=${TRAIN_TEXT:-$(pick '.carry/gutenberg_en_train_*.txt.zst' '../shared/data/gutenberg_en_train_*.txt.zst' data/sample/train.txt.zst)}
	val_text=${VAL_TEXT-$(pick .carry/gutenberg_en_val.txt.zst ../shared/data/gutenberg_en_val.txt.zst)}
	[ -n "$train_text" ] || { echo "speedrun-short.sh: no training text found (set TRAIN_TEXT)" >&2; exit 1; }
	if [ -n "$val_text" ]; then
		tools/record-data.sh -B "$B" -v "$val_text" "$data" $train_text
	else
		say "no validation text: the first $((vtok + 2)) tokens of the training text are the validation set"
		tools/record-data.sh -B "$B" -n $((vtok + 2)) "$data" $train_text
	fi
fi
ntrain=$(gpt-tokshard --stats "$data"/train_*.bin.zst | sed 's/.*"tokens":\([0-9]*\).*/\1/')
nval=$(gpt-tokshard --stats "$data/val.bin.zst" | sed 's/.*"tokens":\([0-9]*\).*/\1/')
if [ "$ntrain" -lt $((batch + 2)) ]; then
	echo "speedrun-short.sh: $ntrain training tokens, a step needs $((batch + 2)): give more text (TRAIN_TEXT) or a smaller BATCH_TOKENS" >&2
	exit 1
fi
if [ "$nval" -lt $((vtok + 2)) ]; then
	echo "speedrun-short.sh: $nval validation tokens, VAL_TOKENS=$vtok needs $((vtok + 2))" >&2
	exit 1
fi
init=${INIT:-$work/init.safetensors}
if [ -z "${INIT:-}" ] && [ ! -s "$init" ]; then
	say "gpt-init --preset record-2025-01-04"
	gpt-init -q --preset record-2025-01-04 -o "$init"
fi
gpt-sched --preset record-2025-01-04 --steps "$steps" --eval-every "$every" -o "$work/schedule.txt"
[ "${STAGE:-}" = prepare ] && exit 0

say "gpt-train --device $device: $steps steps of $batch tokens, validation every $every steps on $vtok tokens"
out=()
[ -n "${OUTPUT:-}" ] && out=(-o "$OUTPUT")
gpt-train -w "$init" --train "$data/train_*.bin.zst" --val "$data/val.bin.zst" --val-tokens "$vtok" \
	--batch-tokens "$batch" --seq-len "$seq" --device "$device" -s "$work/schedule.txt" "${out[@]}" \
	>"$work/train.jsonl" 2>"$work/train.stderr" || { tail -5 "$work/train.stderr" >&2; exit 1; }
python3 bench/record_tables.py curve "$work/train.jsonl"
