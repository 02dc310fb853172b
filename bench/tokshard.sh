#!/usr/bin/env bash
# tokshard.sh - tokenizer speed: gpt-tokshard on 1 thread and on all
# threads, beside js-tiktoken and Python tiktoken when they are installed.
#
#   bench/tokshard.sh [BUILD_DIR [TEXT]]      (make bench runs it)
#
# TEXT (plain or .zst; documents separated by <|endoftext|>) defaults to the
# Gutenberg train shard 00 (38.6 MB) from ../shared/data (GPT_SHARED_DATA),
# else data/sample/train.txt.zst (the books that ship, 1.9 MB); it is decompressed
# first, so every tokenizer reads the same plain text. Each row is the best
# of BENCH_REPEAT runs (default 3); MB/s counts the documents' bytes.
#   js-tiktoken:  used when node finds it (NODE_PATH), e.g.
#     D=$(mktemp -d); (cd $D && npm init -y && npm install js-tiktoken@1.0.21)
#     NODE_PATH=$D/node_modules bench/tokshard.sh
#   tiktoken:     used when `python3 -c 'import tiktoken'` works; the gpt2
#     encoding is built offline from data/gpt2/ (encoder.json, vocab.bpe)
#     with tiktoken's Encoding constructor, as tiktoken's own loader does.
# Every tokenizer's token count is printed; they must agree.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$top/build}
text=${2:-${GPT_SHARED_DATA:-$top/../shared/data}/gutenberg_en_train_00.txt.zst}
# without the shared corpus: the books that ship in data/sample
[ $# -ge 2 ] || [ -r "$text" ] || text=$top/data/sample/train.txt.zst
rep=${BENCH_REPEAT:-3}
P=$B/bin/gpt-tokshard
if [ ! -x "$P" ]; then echo "tokshard.sh: $P not built (make)" >&2; exit 1; fi
if [ ! -r "$text" ]; then echo "tokshard.sh: skip: no text ($text)" >&2; exit 0; fi
ncpu=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $text in
*.zst) zstd -qdc "$text" >"$tmp/text.txt" ;;
*) cp "$text" "$tmp/text.txt" ;;
esac
bytes=$(wc -c <"$tmp/text.txt")

best() { # command... -> best wall seconds of $rep runs (stdout of the last run in $tmp/out)
	local b="" s TIMEFORMAT=%3R
	for _ in $(seq "$rep"); do
		s=$({ time "$@" >"$tmp/out"; } 2>&1)
		if [ -z "$b" ] || awk -v s="$s" -v b="$b" 'BEGIN { exit !(s < b) }'; then b=$s; fi
	done
	echo "$b"
}
row() { # name threads seconds tokens
	awk -v n="$1" -v t="$2" -v s="$3" -v k="$4" -v b="$bytes" \
		'BEGIN { printf "%-34s %7s %8.3f %9.1f %9.2f %11d\n", n, t, s, b / s / 1e6, k / s / 1e6, k }'
}

echo "text: $text ($bytes bytes), best of $rep; $ncpu CPUs"
printf '%-34s %7s %8s %9s %9s %11s\n' tokenizer threads seconds MB/s Mtok/s tokens
for t in 1 "$ncpu"; do
	s=$(best "$P" -q -t "$t" -d --stats "$tmp/text.txt")
	row "gpt-tokshard --stats" "$t" "$s" "$(sed 's/.*"tokens":\([0-9]*\).*/\1/' "$tmp/out")"
done
s=$(best "$P" -q -t "$ncpu" -d -o "$tmp/shard_%d.bin.zst" "$tmp/text.txt")
row "gpt-tokshard -o (zstd shards)" "$ncpu" "$s" "$("$P" --stats "$tmp"/shard_*.bin.zst | sed 's/.*"tokens":\([0-9]*\).*/\1/')"

# js-tiktoken (single-threaded), timing the encoding only
if node -e 'require("js-tiktoken/lite")' 2>/dev/null; then
	cat >"$tmp/js.js" <<'EOF'
const fs = require('fs');
const { Tiktoken } = require('js-tiktoken/lite');
let r = require('js-tiktoken/ranks/gpt2'); r = r.default || r;
const enc = new Tiktoken(r);
const docs = fs.readFileSync(process.argv[2], 'utf8').split('<|endoftext|>').filter((d) => d.length);
let best = Infinity, n = 0;
for (let i = 0; i < +process.argv[3]; i++) {
  const t0 = process.hrtime.bigint();
  n = 0;
  for (const d of docs) n += 1 + enc.encode(d, [], []).length;
  best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
}
console.log(best, n);
EOF
	read -r s k < <(node "$tmp/js.js" "$tmp/text.txt" "$rep")
	v=$(node -p 'require(require.resolve("js-tiktoken/lite").replace(/dist.*$/, "package.json")).version' 2>/dev/null || echo "?")
	row "js-tiktoken $v" 1 "$s" "$k"
else
	echo "(js-tiktoken not found: set NODE_PATH, see the header)"
fi

# Python tiktoken, offline, 1 thread and encode_ordinary_batch on all
if python3 -c 'import tiktoken' 2>/dev/null; then
	cat >"$tmp/tt.py" <<'EOF'
import json, sys, time
import tiktoken

def gpt2_offline(d):
    # tiktoken.load.data_gym_to_mergeable_bpe_ranks, without its file loader
    rank_to_intbyte = [b for b in range(2**8) if chr(b).isprintable() and chr(b) != " "]
    data_gym_byte_to_byte = {chr(b): b for b in rank_to_intbyte}
    n = 0
    for b in range(2**8):
        if b not in rank_to_intbyte:
            rank_to_intbyte.append(b)
            data_gym_byte_to_byte[chr(2**8 + n)] = b
            n += 1
    bpe_merges = [tuple(l.split()) for l in open(d + "/vocab.bpe", encoding="utf-8").read().split("\n")[1:-1]]
    dec = lambda s: bytes(data_gym_byte_to_byte[c] for c in s)
    ranks = {bytes([b]): i for i, b in enumerate(rank_to_intbyte)}
    n = len(ranks)
    for a, b in bpe_merges:
        ranks[dec(a) + dec(b)] = n
        n += 1
    enc = json.load(open(d + "/encoder.json", encoding="utf-8"))
    enc = {dec(k): v for k, v in enc.items() if k != "<|endoftext|>"}
    assert enc == ranks, "encoder.json and vocab.bpe disagree"
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})

enc = gpt2_offline(sys.argv[2])
docs = [d for d in open(sys.argv[1], encoding="utf-8").read().split("<|endoftext|>") if d]
rep, threads = int(sys.argv[3]), int(sys.argv[4])
best, n = float("inf"), 0
for _ in range(rep):
    t0 = time.perf_counter()
    if threads == 1:
        n = sum(1 + len(enc.encode_ordinary(d)) for d in docs)
    else:
        n = sum(1 + len(x) for x in enc.encode_ordinary_batch(docs, num_threads=threads))
    best = min(best, time.perf_counter() - t0)
print(best, n)
EOF
	v=$(python3 -c 'import importlib.metadata as m; print(m.version("tiktoken"))' 2>/dev/null || echo "?")
	for t in 1 "$ncpu"; do
		read -r s k < <(python3 "$tmp/tt.py" "$tmp/text.txt" "$top/data/gpt2" "$rep" "$t")
		row "tiktoken $v (Python)" "$t" "$s" "$k"
	done
else
	echo "(Python tiktoken not installed)"
fi
