#!/usr/bin/env bash
# The pipelines: quickstart end to end (a few steps), and the loss plot.
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

t_run "quickstart (3 steps on the CPU)" 0 env STEPS=3 SAMPLE=5 DEVICE=cpu "$TOP/pipelines/quickstart.sh" qs
t_stderr_has "== a sample"
t_true "quickstart: final weights" test -s qs/final.safetensors
t_true "quickstart: log has the end record" jq -se '.[-1].type == "end" and .[-1].steps == 3' qs/train.jsonl
t_stdout_has "validation loss"

if command -v gnuplot >/dev/null; then
	t_run "plot-loss" 0 "$TOP/pipelines/plot-loss.sh" -o plot.png qs/train.jsonl qs/train.jsonl
	t_true "plot-loss: a PNG" sh -c "head -c 8 plot.png | od -An -tx1 | grep -q '89 50 4e 47 0d 0a 1a 0a'"
else
	echo "skip plot-loss: gnuplot not installed" >&2
fi
t_run "plot-loss: no input" 2 "$TOP/pipelines/plot-loss.sh"
echo '{"type":"other"}' >empty.jsonl
t_run "plot-loss: no records" 1 "$TOP/pipelines/plot-loss.sh" -o x.png empty.jsonl
t_stderr_has "no train or val records"
t_true "plot-loss: nothing written on failure" test ! -e x.png

# ---- the speedrun pipeline, small: tiny model, 3 steps, 2 CPU ranks ----
gpt-init -q --preset tiny --layers 2 --dim 32 --heads 1 --value-embeds 1 --no-attn none -o tiny.safetensors
small=(INIT=tiny.safetensors STEPS=3 EVAL_EVERY=2 VAL_TOKENS=512 BATCH_TOKENS=1024 SEQ_LEN=256 DEVICE=cpu)
t_run "speedrun.sh (text, 2 CPU ranks)" 0 env "${small[@]}" GPUS=2 "$TOP/pipelines/speedrun.sh" sr
t_stdout_has "steps trained +3 of 3"
t_stdout_has "world +2 rank"
t_true "speedrun.sh: final weights" test -s sr/final.safetensors
t_true "speedrun.sh: the loop's and gpt-eval's final losses agree" jq -se --slurpfile ev sr/eval.json \
	'(map(select(.type == "val")) | last | .val_loss) as $v | ($ev[0].loss - $v | fabs) < 1e-5' \
	sr/train.jsonl
t_stdout_has "logs +1 \(train.jsonl\)$"
t_run "speedrun.sh: FETCH is a count" 2 env FETCH=x "$TOP/pipelines/speedrun.sh" sr2

# RESUME=1: a run with checkpoints at steps 2 and 3 (the last), its step-3
# checkpoint removed as if it had stopped after step 1, resumed: step 2
# again, the same final weights, both logs read by the summary
t_run "speedrun.sh CKPT_EVERY=2" 0 env "${small[@]}" GPUS=2 CKPT_EVERY=2 "$TOP/pipelines/speedrun.sh" srr
t_true "speedrun.sh: checkpoint at step 2" test -s srr/ckpt/ckpt_00000002.safetensors
cp srr/final.safetensors srr3.safetensors
rm -f srr/ckpt/ckpt_00000003.safetensors srr/final.safetensors
t_run "speedrun.sh RESUME=1" 0 env "${small[@]}" GPUS=2 CKPT_EVERY=2 RESUME=1 "$TOP/pipelines/speedrun.sh" srr
t_stderr_has "resuming from .*srr/ckpt/ckpt_00000002.safetensors"
t_true "speedrun.sh: resumed final weights are the uninterrupted run's" cmp srr3.safetensors srr/final.safetensors
t_true "speedrun.sh: the earlier log kept" jq -se '.[-1].steps == 3' srr/train.jsonl.1
t_true "speedrun.sh: the resumed log trains step 2 only" \
	jq -se '[.[] | select(.type == "train") | .step] == [2]' srr/train.jsonl
t_stdout_has "steps trained +3 of 3"
t_stdout_has "logs +2 \(train.jsonl and 1 earlier, a step trained twice counted as its last run\)"
t_run "speedrun.sh: a fresh run drops the old logs and checkpoints" 0 env "${small[@]}" GPUS=1 \
	"$TOP/pipelines/speedrun.sh" srr
t_true "speedrun.sh: no earlier log or checkpoint left" test ! -e srr/train.jsonl.1 -a ! -e srr/ckpt/ckpt_00000002.safetensors
t_run "speedrun.sh RESUME=1 without a checkpoint" 1 env "${small[@]}" GPUS=1 RESUME=1 "$TOP/pipelines/speedrun.sh" srr
t_stderr_has "RESUME=1 but no checkpoint in .*srr/ckpt"

# the llm.c .bin route (the FineWeb cache layout), imported
mkdir -p bins
gpt-tokshard -q -d -o bins/t.bin.zst "$TOP/data/sample/train.txt.zst"
gpt-tokshard -q --export -o bins/fineweb_train_000001.bin bins/t.bin.zst
gpt-tokshard -q -d -o bins/v.bin.zst "$TOP/data/sample/val.txt.zst"
gpt-tokshard -q --export -o bins/fineweb_val_000000.bin bins/v.bin.zst
t_run "speedrun.sh (DATA_BIN)" 0 env "${small[@]}" GPUS=1 DATA_BIN=bins "$TOP/pipelines/speedrun.sh" srb
t_true "speedrun.sh: imported shards" test -s srb/data/fineweb_train_000001.bin.zst -a -s srb/data/fineweb_val_000000.bin.zst
t_run "speedrun.sh: DATA_BIN without the files" 1 env "${small[@]}" DATA_BIN=sr "$TOP/pipelines/speedrun.sh" src

# multinode.sh: two ranks as Slurm would start them, on a prepared directory
t_run "multinode.sh: not prepared" 1 "$TOP/pipelines/multinode.sh" nothing
t_run "multinode.sh: usage" 2 "$TOP/pipelines/multinode.sh"
t_run "speedrun.sh STAGE=prepare" 0 env "${small[@]}" STAGE=prepare "$TOP/pipelines/speedrun.sh" mn
mn=(INIT=tiny.safetensors VAL_TOKENS=512 BATCH_TOKENS=1024 SEQ_LEN=256 DEVICE=cpu SLURM_JOB_ID=42
	SLURM_NTASKS=2 SLURM_NTASKS_PER_NODE=2)
env "${mn[@]}" SLURM_PROCID=1 SLURM_LOCALID=1 "$TOP/pipelines/multinode.sh" mn 2>mn1.err &
t_run "multinode.sh: rank 0 of 2 (Slurm variables)" 0 env "${mn[@]}" SLURM_PROCID=0 SLURM_LOCALID=0 \
	"$TOP/pipelines/multinode.sh" mn
wait $! || t_fail "multinode.sh: rank 1" "$(cat mn1.err)"
t_true "multinode.sh: same final loss as speedrun.sh on 2 ranks" test \
	"$(jq -r 'select(.type == "end") | .val_loss' mn/train.jsonl)" = \
	"$(jq -r 'select(.type == "end") | .val_loss' sr/train.jsonl)" -a -s mn/train.jsonl
t_true "multinode.sh: world 2" jq -e 'select(.type == "end") | .world == 2' mn/train.jsonl
