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
