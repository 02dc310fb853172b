#!/usr/bin/env bash
# plot-loss.sh - plot gpt-train's JSON lines: training and validation loss
# against step and against training time, one or several runs side by side.
#
#   pipelines/plot-loss.sh [-o loss.png] RUN.jsonl [RUN2.jsonl ...]
#
# Needs jq and gnuplot (Debian: apt-get install gnuplot-nox). Each run is
# labelled with its file name. Writes a PNG (default loss.png) with two
# panels: loss vs step, loss vs training time (seconds, evaluations excluded).
set -euo pipefail
out=loss.png
usage() { echo "usage: plot-loss.sh [-o out.png] run.jsonl..." >&2; exit 2; }
while getopts o:h opt; do
	case $opt in
	o) out=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
command -v gnuplot >/dev/null || { echo "plot-loss.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
command -v jq >/dev/null || { echo "plot-loss.sh: jq not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step_plots=() time_plots=()
i=0
for f in "$@"; do
	[ -r "$f" ] || { echo "plot-loss.sh: $f: cannot read" >&2; exit 1; }
	name=${f%.jsonl}
	jq -r 'select(.type == "train") | "\(.step + 1) \(.train_time_ms / 1000) \(.loss)"' "$f" >"$tmp/t$i"
	jq -r 'select(.type == "val") | "\(.step) \(.train_time_ms / 1000) \(.val_loss)"' "$f" >"$tmp/v$i"
	[ -s "$tmp/t$i" ] || [ -s "$tmp/v$i" ] || { echo "plot-loss.sh: $f: no train or val records" >&2; exit 1; }
	c=$((i + 1))
	step_plots+=("'$tmp/t$i' using 1:3 with lines lc $c lw 1 title '$name train'"
		"'$tmp/v$i' using 1:3 with linespoints lc $c lw 2 pt 7 title '$name val'")
	time_plots+=("'$tmp/t$i' using 2:3 with lines lc $c lw 1 notitle"
		"'$tmp/v$i' using 2:3 with linespoints lc $c lw 2 pt 7 notitle")
	i=$((i + 1))
done
join() { local IFS=,; echo "$*"; }
gnuplot <<GP
set terminal pngcairo size 1400,560 font ',10'
set output '$out.tmp'
set multiplot layout 1,2
set grid
set key top right
set ylabel 'loss (nats per token)'
set xlabel 'step'
plot $(join "${step_plots[@]}")
set xlabel 'training time (s)'
plot $(join "${time_plots[@]}")
unset multiplot
GP
mv "$out.tmp" "$out"
echo "$out"
