#!/usr/bin/env bash
# record-data.sh - tokenize text once, for gpt-* and for the record's PyTorch
# script alike: gpt-tokshard writes zstd shards (gpt-shard(5), what gpt-train
# and gpt-eval read) and exports the very same tokens as llm.c .bin files (what
# the record's loader and tools/record_run.py read), so both see identical tokens.
#
#   tools/record-data.sh [-B BUILD_DIR] [-v VAL_TEXT] [-n VAL_TOKENS] OUTDIR TRAIN_TEXT...
#
# TRAIN_TEXT: plain-text files (.zst is decompressed) whose documents are
# preceded by <|endoftext|>, as the Gutenberg files and data/sample are; they
# are tokenized in the order given, as one stream (GPT-2 BPE, 50256 before each
# document), cut into shards of 100M tokens.
#   -v VAL_TEXT   the validation text, tokenized the same way into val.*;
#   -n VAL_TOKENS without -v: the first VAL_TOKENS tokens of the training text
#                 become the validation set instead (default 1179650: 18
#                 sequences of 65,536 tokens plus the 2 that the loaders need);
#   -B BUILD_DIR  where bin/gpt-tokshard is (default: build).
# Writes OUTDIR/train_000000.bin.zst ... and OUTDIR/val.bin.zst (gpt-* shards),
# OUTDIR/train_000000.bin ... and OUTDIR/val.bin (llm.c: 256-int32 header with
# magic 20240520, version 1, then uint16 tokens), and OUTDIR/stats.jsonl
# (gpt-tokshard --stats of each set). Does nothing when OUTDIR/.stamp shows the
# same inputs (names, sizes, times) and options. Progress on stderr.
set -euo pipefail
prog=record-data.sh
B=build val= nval=1179650
usage() { echo "Usage: tools/record-data.sh [-B BUILD_DIR] [-v VAL_TEXT] [-n VAL_TOKENS] OUTDIR TRAIN_TEXT..." >&2; exit 2; }
while getopts B:v:n:h opt; do
	case $opt in
	B) B=$OPTARG ;;
	v) val=$OPTARG ;;
	n) nval=$OPTARG ;;
	h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || usage
case $nval in '' | *[!0-9]*) echo "$prog: -n takes a token count" >&2; exit 2 ;; esac
out=$1; shift
tok=$B/bin/gpt-tokshard
[ -x "$tok" ] || { echo "$prog: $tok not found: build first (make)" >&2; exit 1; }
for f in "$@" ${val:+"$val"}; do
	[ -r "$f" ] || { echo "$prog: $f: cannot read" >&2; exit 1; }
done
mkdir -p "$out"
stamp=$( { echo "val=$val nval=$nval"; ls -lL --time-style=+%s -- "$@" ${val:+"$val"} | awk '{ print $5, $6, $7 }'; } )
if [ -r "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -r "$out/val.bin" ] && ls "$out"/train_*.bin >/dev/null 2>&1; then
	echo "$prog: $out is up to date" >&2
	exit 0
fi
rm -f "$out"/train_*.bin "$out"/train_*.bin.zst "$out"/val.bin "$out"/val.bin.zst "$out/.stamp" "$out/stats.jsonl"
echo "$prog: tokenizing $* into $out" >&2
if [ -n "$val" ]; then
	"$tok" -q -d -o "$out/train_%06d.bin.zst" "$@"
	"$tok" -q -d -o "$out/val.bin.zst" "$val"
else
	"$tok" -q -d --val-tokens "$nval" --val-output "$out/val.bin.zst" -o "$out/train_%06d.bin.zst" "$@"
fi
"$tok" -q --export "$out"/train_*.bin.zst "$out/val.bin.zst"
{
	"$tok" --stats "$out"/train_*.bin.zst | sed 's/^{/{"set":"train",/'
	"$tok" --stats "$out/val.bin.zst" | sed 's/^{/{"set":"val",/'
} >"$out/stats.jsonl"
cat "$out/stats.jsonl" >&2
printf '%s\n' "$stamp" >"$out/.stamp"
