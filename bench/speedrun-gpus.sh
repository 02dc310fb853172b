#!/usr/bin/env bash
# speedrun-gpus.sh - the record's run on G GPUs of one machine, twice, on the
# same tokens and the same initial weights: gpt-* (GPUS=G pipelines/speedrun.sh:
# gpt-train --gpus G) and the record's own PyTorch code under torchrun on the
# same G GPUs (tools/record_run.py --mode steps, one rank per GPU: each rank
# 8/G micro-batches of 65,536 tokens, as the record on 8). Prints a table:
# ms/step in the window-1, 7 and 14 phases of the schedule, training time (spec
# 11: steps 10 and later, evaluations excluded), validation curves side by side,
# peak memory per GPU, and with a one-GPU result the scaling efficiency.
#
#   bench/speedrun-gpus.sh BUILD_DIR [RESULTS_DIR]
#   bench/speedrun-gpus.sh --table RESULTS_DIR     (the table again, from the logs)
#
# Tokens: the Gutenberg text (TRAIN_TEXT [.carry/gutenberg_en_train_*.txt.zst,
# else ../shared/data's], VAL_TEXT [.carry/gutenberg_en_val.txt.zst, else
# ../shared/data's]) tokenized once by tools/record-data.sh into SCRATCH/data:
# the .bin files are what the record's loader reads, and gpt-* imports the very
# same files (pipelines/speedrun.sh DATA_BIN=, through links named as the
# record's cache names them), so both read identical tokens in identical shards.
# The text holds fewer tokens than 1390 steps read; both loaders wrap around to
# the first shard in the same way (spec 7.2).
# Weights: INIT [gpt-init --preset record-2025-01-04, seed 0], for both.
# Environment (defaults in brackets):
#   GPUS        GPUs to use [all that nvidia-smi -L lists]; GPUs 0..G-1 of
#               CUDA_VISIBLE_DEVICES (else of the machine)
#   STEPS       training steps, the record's schedules compressed to STEPS
#               [1390, the record; 300 when TIME_LIMIT is set and at most 900]
#   EVAL_EVERY  [125, the record's cadence]
#   VAL_TOKENS  [1048576 = 16 x 65,536: a multiple of G x 65,536 for G dividing
#               8, as the record's validation needs; the Gutenberg validation
#               text holds about 1.2M tokens, not the record's 10,485,760]
#   TIME_LIMIT  seconds for each side's command (gpt-*: speedrun.sh's import,
#               training and final evaluation; PyTorch: torchrun), after which
#               its process group is stopped; the table shows what was logged
#               until then. Tokenizing (once) is not counted [none]
#   WHICH       both | gpt | torch [both]: one side per call, same RESULTS_DIR,
#               when both do not fit in one command
#   ONE_GPU_DIR a results directory of bench/train_gpu.sh (one GPU, the
#               windows 1, 7, 14 held): its median ms/step per window give the
#               scaling efficiency t1 / (G x tG) [none]
#   SCRATCH     tokens and weights, reused [/tmp/gpt-record-gpus]
#   BATCH_TOKENS [524288], SEQ_LEN [65536]: both sides (for tests: the
#               record's are the defaults); DEVICE: speedrun.sh's [auto]
# RESULTS_DIR [$OUT/speedrun-gpus, else ./speedrun-gpus] receives gpt.jsonl
# (gpt-train's JSON lines), gpt.txt (speedrun.sh's summary), gpt/ (its work
# directory), torch.jsonl, torch.stderr and table.md.
# Choice of the defaults for a 10-minute command: on 8 H200s the record's code
# trains 1390 steps in about 205 s (its log) after torch.compile (83 s on one
# H200 with PyTorch 2.11, 244 s in the record's log), and gpt-* at roughly
# 1/8 of its one-GPU 1.1 s/step needs about as long: one side at 1390 steps
# fits a command (WHICH=gpt, then WHICH=torch, TIME_LIMIT=540 STEPS=1390),
# both together may not. With TIME_LIMIT <= 900 and no STEPS, 300 steps are
# run (every window 1..14 occurs: steps 10-22 at 1, about 11 at 14), which
# fits both sides in one command.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
prog=speedrun-gpus.sh
usage() { echo "Usage: bench/speedrun-gpus.sh BUILD_DIR [RESULTS_DIR] | --table RESULTS_DIR" >&2; exit 2; }
case ${1:-} in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
num() { case $2 in '' | *[!0-9]*) echo "$prog: $1 must be a whole number (got '$2')" >&2; exit 2 ;; esac; }
tlim=${TIME_LIMIT:-}
[ -n "$tlim" ] && num TIME_LIMIT "$tlim"
if [ -n "${STEPS:-}" ]; then steps=$STEPS
elif [ -n "$tlim" ] && [ "$tlim" -le 900 ]; then steps=300
else steps=1390; fi
every=${EVAL_EVERY:-125} vtok=${VAL_TOKENS:-1048576} which=${WHICH:-both}
bt=${BATCH_TOKENS:-524288} sl=${SEQ_LEN:-65536}
num STEPS "$steps"; num EVAL_EVERY "$every"; num VAL_TOKENS "$vtok"; num BATCH_TOKENS "$bt"; num SEQ_LEN "$sl"
[ "$sl" -ge 128 ] && [ $((bt % sl)) -eq 0 ] && [ "$bt" -ge "$sl" ] ||
	{ echo "$prog: BATCH_TOKENS must be a positive multiple of SEQ_LEN (>= 128)" >&2; exit 2; }
[ "$steps" -ge 1 ] || { echo "$prog: STEPS must be >= 1" >&2; exit 2; }
case $which in both | gpt | torch) ;; *) echo "$prog: WHICH is both, gpt or torch" >&2; exit 2 ;; esac
one=${ONE_GPU_DIR:-}

table() { # RESULTS_DIR G
	local o=()
	[ -n "$one" ] && o=(--one-gpu "$one")
	python3 "$top/bench/record_tables.py" gpus "$1/gpt.jsonl" "$1/torch.jsonl" --gpus "$2" "${o[@]}"
}
if [ "${1:-}" = --table ]; then
	[ $# -eq 2 ] || usage
	g=${GPUS:-$(cat "$2/gpus" 2>/dev/null || echo 0)}
	table "$2" "$g"
	exit
fi
[ $# -ge 1 ] && [ $# -le 2 ] || usage
B=$(cd "$1" 2>/dev/null && pwd) || { echo "$prog: $1: no such build directory" >&2; exit 2; }
[ -x "$B/bin/gpt-train" ] || { echo "$prog: $B/bin/gpt-train not found (run make)" >&2; exit 2; }
res=${2:-${OUT:-.}/speedrun-gpus}
mkdir -p "$res"
res=$(cd "$res" && pwd)
cd "$top"
export PATH="$B/bin:$PATH" NCCL_NVLS_ENABLE=0
say() { echo "speedrun-gpus: $*" >&2; }

# ---- GPUs
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
	IFS=, read -r -a all <<<"$CUDA_VISIBLE_DEVICES"
else
	mapfile -t all < <(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9]*\):.*/\1/p')
fi
G=${GPUS:-${#all[@]}}
num GPUS "$G"
[ "$G" -ge 1 ] || { echo "$prog: no GPU found (nvidia-smi -L); set GPUS" >&2; exit 1; }
[ $((bt / sl % G)) -eq 0 ] ||
	{ echo "$prog: GPUS=$G: the batch of $((bt / sl)) x $sl tokens (the record: 8 x 65,536) needs G dividing $((bt / sl))" >&2; exit 2; }
[ ${#all[@]} -ge "$G" ] || { echo "$prog: GPUS=$G but only ${#all[@]} GPU(s) visible" >&2; exit 1; }
[ $((vtok % (G * sl))) -eq 0 ] || { echo "$prog: VAL_TOKENS=$vtok is not a multiple of $G x $sl" >&2; exit 2; }
devs=$(IFS=,; echo "${all[*]:0:G}")
echo "$G" >"$res/gpus"

# ---- tokens and weights, once, for both
scratch=${SCRATCH:-/tmp/gpt-record-gpus}
mkdir -p "$scratch/fineweb"
pick() { # PATTERN: the first of .carry/, ../shared/data/ that has files
	local d f
	for d in .carry ../shared/data; do
		for f in "$d"/$1; do [ -r "$f" ] && { echo "$d/$1"; return; }; done
	done
}
ttext=${TRAIN_TEXT:-$(pick 'gutenberg_en_train_*.txt.zst')}
vtext=${VAL_TEXT:-$(pick gutenberg_en_val.txt.zst)}
[ -n "$ttext" ] && [ -n "$vtext" ] ||
	{ echo "$prog: no Gutenberg text in .carry/ or ../shared/data/ (set TRAIN_TEXT and VAL_TEXT)" >&2; exit 1; }
# shellcheck disable=SC2086  # TRAIN_TEXT: space-separated files or a glob
tools/record-data.sh -B "$B" -v "$vtext" "$scratch/data" $ttext
init=${INIT:-$scratch/init.safetensors}
[ -n "${INIT:-}" ] || [ -s "$init" ] || gpt-init -q --preset record-2025-01-04 --seed 0 -o "$init"
# the record's cache names, for pipelines/speedrun.sh DATA_BIN= (it imports them)
rm -f "$scratch"/fineweb/fineweb_*.bin
n=0
for f in "$scratch"/data/train_*.bin; do
	n=$((n + 1))
	ln -s "$f" "$scratch/fineweb/$(printf 'fineweb_train_%06d.bin' "$n")"
done
ln -s "$scratch/data/val.bin" "$scratch/fineweb/fineweb_val_000000.bin"

# ---- a command under TIME_LIMIT: its own process group, stopped as a whole
limited() {
	if [ -z "$tlim" ]; then "$@"; return; fi
	setsid "$@" &
	local pid=$! rc=0
	(
		trap 'kill "$s" 2>/dev/null; exit 0' TERM
		sleep "$tlim" & s=$!
		wait "$s"
		echo "speedrun-gpus: TIME_LIMIT=$tlim s reached: stopping $*" >&2
		kill -TERM -- "-$pid" 2>/dev/null || exit 0
		sleep 20 & s=$!
		wait "$s"
		kill -KILL -- "-$pid" 2>/dev/null || true
	) &
	local w=$!
	wait "$pid" || rc=$?
	kill -TERM "$w" 2>/dev/null || true
	wait "$w" 2>/dev/null || true
	return $rc
}

rc=0
if [ "$which" != torch ]; then
	say "gpt-*: pipelines/speedrun.sh, GPUS=$G (devices $devs), $steps steps, validation every $every on $vtok tokens"
	rm -rf "$res/gpt" "$res/gpt.jsonl"
	CUDA_VISIBLE_DEVICES=$devs GPUS=$G BUILD="$B" DATA_BIN="$scratch/fineweb" INIT="$init" STEPS=$steps \
		EVAL_EVERY=$every VAL_TOKENS=$vtok limited pipelines/speedrun.sh "$res/gpt" >"$res/gpt.txt" || rc=1
	[ -s "$res/gpt/train.jsonl" ] && cp "$res/gpt/train.jsonl" "$res/gpt.jsonl"
	say "gpt-* done (status $rc)"
fi
if [ "$which" != gpt ]; then
	say "the record's code: torchrun, $G rank(s) (devices $devs), $steps steps (torch.compile first)"
	trc=0
	CUDA_VISIBLE_DEVICES=$devs limited python3 -m torch.distributed.run --standalone --nproc_per_node="$G" \
		tools/record_run.py --mode steps --train-bin "$scratch/data/train_*.bin" --val-bin "$scratch/data/val.bin" \
		--steps "$steps" --val-every "$every" --val-tokens "$vtok" --batch-tokens "$bt" --seq-len "$sl" \
		--init-weights "$init" \
		>"$res/torch.jsonl" 2>"$res/torch.stderr" || trc=1
	[ $trc = 0 ] || { rc=1; tail -20 "$res/torch.stderr" >&2; }
	say "the record's code done (status $trc)"
fi
table "$res" "$G" | tee "$res/table.md"
exit $rc
