#!/usr/bin/env bash
# parity.sh - compare gpt-*'s loss and every parameter gradient with an
# outside reference: tools/torch_ref.py, a PyTorch model written from the
# spec, on the same weights and real tokens, both in fp32 on the CPU.
#
#   tools/parity.sh BUILD_DIR PRESET T WINDOW [TOL]
#
# PRESET: a gpt-init preset (tiny, record-2025-01-04). T: tokens (a multiple
# of 128, at most ~46000: the shipped sample's validation book). Needs
# python3 with torch and safetensors (the GPU machine has them). The zero-
# initialised tensors are replaced by small random values first, so that
# every gradient is nonzero. Prints the comparison table; exit 1 if a
# relative error exceeds TOL (default 1e-4).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$1" && pwd); preset=$2; T=$3; W=$4; tol=${5:-1e-4}
export PATH="$B/bin:$PATH"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
gpt-tokshard -q -d -o "$d/val.bin.zst" "$top/data/sample/val.txt.zst"
gpt-tokshard -q --export -o "$d/val.bin" "$d/val.bin.zst"
python3 - "$d/val.bin" "$d/cut.bin" "$T" <<'PY'
import sys, numpy as np
raw = open(sys.argv[1], "rb").read()
n = int(sys.argv[3]) + 1
toks = np.frombuffer(raw[1024:], dtype="<u2")[:n]
hdr = np.zeros(256, dtype="<i4"); hdr[0] = 20240520; hdr[1] = 1; hdr[2] = n
open(sys.argv[2], "wb").write(hdr.tobytes() + toks.tobytes())
PY
gpt-init -q --preset "$preset" -o "$d/init.safetensors"
t0=$(date +%s.%N)
python3 "$top/tools/torch_ref.py" --weights "$d/init.safetensors" --perturb "$d/w.safetensors" \
	--tokens "$d/cut.bin" --window "$W" --out "$d/ref.safetensors"
t1=$(date +%s.%N)
gpt-eval -q --device cpu -w "$d/w.safetensors" --val "$d/val.bin.zst" --seq-len "$T" --tokens "$T" \
	--window "$W" --grad-out "$d/ours.safetensors"
t2=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v p="$preset" -v T="$T" -v W="$W" 'BEGIN { printf "preset %s, T=%s, W=%s: PyTorch %.1f s, gpt-eval %.1f s\n", p, T, W, b - a, c - b }'
python3 "$top/tools/compare_grads.py" "$d/ours.safetensors" "$d/ref.safetensors" --tol "$tol"
