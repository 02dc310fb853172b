#!/usr/bin/env bash
# speedrun.sh - the NanoGPT speedrun record of 2025-01-04 end to end with gpt-*:
# tokens, initial weights, the record's schedule, training on all local GPUs
# (gpt-train --gpus N: one rank per GPU over NCCL), a final evaluation, and
# the training time as the record measures it.
#
#   pipelines/speedrun.sh [WORKDIR]          (default: ./speedrun)
#
# Data (the first that applies):
#   DATA_BIN=DIR   llm.c .bin files already on disk, e.g. the record's FineWeb
#                  cache (fineweb_train_*.bin, fineweb_val_*.bin), imported
#                  into shards with gpt-tokshard --import;
#   FETCH=N        download the validation file and N training files (100M
#                  tokens each; the record's 1390 steps read 729M: N=8) of
#                  that cache from Hugging Face (kjj0/fineweb10B-gpt2, the
#                  files data/cached_fineweb10B.py of the record fetches) into
#                  WORKDIR/fineweb10B, then import them. Nothing is downloaded
#                  unless FETCH is set;
#   TRAIN_TEXT, VAL_TEXT
#                  text files (plain, JSON lines, .zst), space-separated,
#                  tokenized by gpt-tokshard -d (documents split at
#                  <|endoftext|>); VAL_TEXT unset: the validation tokens are
#                  split off the training text (--val-tokens).
# Environment (defaults in brackets):
#   BUILD [build]  GPUS [the GPUs nvidia-smi lists, else 1]  DEVICE [auto]
#   INIT           initial weights [gpt-init --preset record-2025-01-04 --seed SEED]
#   SEED [0]  STEPS [1390, the record]  EVAL_EVERY [125]
#   VAL_TOKENS [10485760]  BATCH_TOKENS [524288]  SEQ_LEN [65536]
#   CKPT_EVERY     checkpoint cadence in steps, into WORKDIR/ckpt [none: only
#                  the checkpoint a SIGINT or SIGTERM leaves]
#   RESUME=1       continue from the newest checkpoint in WORKDIR/ckpt: the
#                  earlier log is kept as train.jsonl.1 (.2, ...), and the
#                  summary reads them all in order, a step trained twice
#                  counting as its last run. Without it a run starts afresh
#                  and drops the earlier run's checkpoints and old logs.
#   STAGE          'prepare': stop after data, weights and schedule [run all]
# Writes WORKDIR/schedule.txt, WORKDIR/train.jsonl (gpt-train's JSON lines),
# WORKDIR/final.safetensors, WORKDIR/eval.json (gpt-eval on the validation
# tokens), and prints a summary. Training time as spec section 11: the sum of
# the step times of steps 10 and later (the record resets its clock at step
# 10, so compilation does not count; evaluations are never counted).
# Exit status: 0 done, 1 error, 2 usage, 128+N training stopped by signal N
# (RESUME=1 then continues from the checkpoint it left).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-speedrun}
B=$(cd "${BUILD:-$top/build}" && pwd) || { echo "speedrun.sh: no build directory (run make)" >&2; exit 2; }
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
for p in gpt-tokshard gpt-init gpt-sched gpt-train gpt-eval; do
	command -v "$p" >/dev/null || { echo "speedrun.sh: $p not found in $B/bin (run make)" >&2; exit 2; }
done
command -v jq >/dev/null || { echo "speedrun.sh: jq is needed for the summary" >&2; exit 2; }
say() { echo "== $*" >&2; }
steps=${STEPS:-1390} every=${EVAL_EVERY:-125} vt=${VAL_TOKENS:-10485760}
bt=${BATCH_TOKENS:-524288} sl=${SEQ_LEN:-65536}
mkdir -p "$work/data"

# ---- data ----
if [ -n "${FETCH:-}" ] && [ -z "${DATA_BIN:-}" ]; then
	case $FETCH in *[!0-9]* | 0) echo "speedrun.sh: FETCH is a number of training files (1..103)" >&2; exit 2 ;; esac
	DATA_BIN=$work/fineweb10B
	mkdir -p "$DATA_BIN"
	url=https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main
	for f in fineweb_val_000000.bin $(seq -f 'fineweb_train_%06g.bin' 1 "$FETCH"); do
		[ -s "$DATA_BIN/$f" ] && continue
		say "downloading $f"
		curl -fL --retry 3 -o "$DATA_BIN/$f.part" "$url/$f" && mv "$DATA_BIN/$f.part" "$DATA_BIN/$f"
	done
fi
if [ -n "${DATA_BIN:-}" ]; then
	shopt -s nullglob
	tr=("$DATA_BIN"/fineweb_train_*.bin) va=("$DATA_BIN"/fineweb_val_*.bin)
	shopt -u nullglob
	[ ${#tr[@]} -gt 0 ] && [ ${#va[@]} -gt 0 ] ||
		{ echo "speedrun.sh: $DATA_BIN: no fineweb_train_*.bin and fineweb_val_*.bin" >&2; exit 1; }
	for f in "${tr[@]}" "${va[@]}"; do
		out=$work/data/$(basename "$f").zst
		[ -s "$out" ] && [ "$out" -nt "$f" ] && continue
		say "importing $(basename "$f")"
		gpt-tokshard -q --import -o "$out" "$f"
	done
	train_glob="$work/data/fineweb_train_*.bin.zst" val_glob="$work/data/fineweb_val_*.bin.zst"
else
	read -r -a ttext <<<"${TRAIN_TEXT:-$top/data/sample/train.txt.zst}"
	if [ ! -s "$work/data/.done" ]; then
		say "tokenizing ${ttext[*]}"
		rm -f "$work"/data/train_*.bin.zst "$work"/data/val*.bin.zst
		if [ -n "${VAL_TEXT:-}" ]; then
			read -r -a vtext <<<"$VAL_TEXT"
			gpt-tokshard -q -d -o "$work/data/train_%03d.bin.zst" "${ttext[@]}"
			gpt-tokshard -q -d -o "$work/data/val.bin.zst" "${vtext[@]}"
		else
			gpt-tokshard -q -d --val-tokens "$((vt + 2))" --val-output "$work/data/val.bin.zst" \
				-o "$work/data/train_%03d.bin.zst" "${ttext[@]}"
		fi
		echo done >"$work/data/.done"
	fi
	train_glob="$work/data/train_*.bin.zst" val_glob="$work/data/val*.bin.zst"
fi

# ---- weights and schedule ----
init=${INIT:-$work/init.safetensors}
if [ -z "${INIT:-}" ] && [ ! -s "$init" ]; then
	say "initial weights (record preset, seed ${SEED:-0})"
	gpt-init -q --preset record-2025-01-04 --seed "${SEED:-0}" -o "$init"
fi
ck=()
[ -n "${CKPT_EVERY:-}" ] && ck=(--ckpt-every "$CKPT_EVERY")
gpt-sched --preset record-2025-01-04 --steps "$steps" --eval-every "$every" "${ck[@]}" -o "$work/schedule.txt"
[ "${STAGE:-}" = prepare ] && { say "prepared $work"; exit 0; }

# ---- training ----
gpus=${GPUS:-}
if [ -z "$gpus" ]; then
	gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
	[ "$gpus" -ge 1 ] 2>/dev/null || gpus=1
fi
if [ "${RESUME:-}" = 1 ]; then
	shopt -s nullglob
	cks=("$work"/ckpt/ckpt_*.safetensors) # eight-digit steps: sorted by name = by step
	shopt -u nullglob
	[ ${#cks[@]} -gt 0 ] || { echo "speedrun.sh: RESUME=1 but no checkpoint in $work/ckpt" >&2; exit 1; }
	start=(--resume "${cks[${#cks[@]} - 1]}")
	if [ -s "$work/train.jsonl" ]; then
		n=1
		while [ -e "$work/train.jsonl.$n" ]; do n=$((n + 1)); done
		mv "$work/train.jsonl" "$work/train.jsonl.$n"
	fi
	say "resuming from ${cks[${#cks[@]} - 1]}"
else
	rm -f "$work"/train.jsonl.[0-9]* "$work"/ckpt/ckpt_*.safetensors
	start=(-w "$init")
fi
say "training: $steps steps of $bt tokens on $gpus rank(s), device ${DEVICE:-auto}"
rc=0
gpt-train --gpus "$gpus" --device "${DEVICE:-auto}" "${start[@]}" --train "$train_glob" \
	--val "$val_glob" --batch-tokens "$bt" --seq-len "$sl" --val-tokens "$vt" \
	-s "$work/schedule.txt" --ckpt-dir "$work/ckpt" -o "$work/final.safetensors" \
	>"$work/train.jsonl" || rc=$?
if [ "$rc" -ne 0 ]; then
	[ "$rc" -gt 128 ] &&
		echo "speedrun.sh: training stopped by signal $((rc - 128)); RESUME=1 continues from the checkpoint in $work/ckpt" >&2
	exit "$rc"
fi
logs=()
n=1
while [ -e "$work/train.jsonl.$n" ]; do logs+=("$work/train.jsonl.$n") && n=$((n + 1)); done
logs+=("$work/train.jsonl")

# ---- final evaluation and summary ----
say "final evaluation"
gpt-eval -q --device "${DEVICE:-auto}" -w "$work/final.safetensors" --val "$val_glob" --seq-len "$sl" \
	--tokens "$vt" --window 14 >"$work/eval.json"
cat "${logs[@]}" | jq -rs --argjson steps "$steps" --argjson nlogs "${#logs[@]}" \
	--slurpfile ev "$work/eval.json" '
	(map(select(.type == "train"))
	 | reduce .[] as $r ({}; .[$r.step | tostring] = $r) | [.[]] | sort_by(.step)) as $t
	| (map(select(.type == "val")) | last) as $v
	| ($t | map(select(.step >= 10) | .step_ms) | add // 0) as $timed
	| ($t | map(select(.step >= 10)) | length) as $n
	| "steps trained        \($t | length) of \($steps)",
	  "final val loss       \($v.val_loss // "none") (train loop, step \($v.step // "-"));  gpt-eval: \($ev[0].loss)",
	  "reached 3.28         \(if ($v.val_loss // 99) <= 3.28 then "yes" else "no" end)",
	  "training time        \($timed / 1000 | . * 10 | round / 10) s over steps 10.. (spec 11; all steps: \(($t | map(.step_ms) | add // 0) / 1000 | . * 10 | round / 10) s)",
	  "step time            \(if $n > 0 then ($timed / $n | . * 10 | round / 10) else "-" end) ms per step (mean over steps 10..)",
	  "world                \(map(select(.type == "end")) | last | .world // 1) rank(s); peak \((map(select(.type == "end")) | last | .peak_bytes // 0) / 1e9 | . * 100 | round / 100) GB per rank",
	  "logs                 \($nlogs) (train.jsonl\(if $nlogs > 1 then " and \($nlogs - 1) earlier, a step trained twice counted as its last run" else "" end))"
'
