#!/bin/sh
# Registers, stack frame and spills of every kernel in the given .cu files
# (default: kernels/*.cu), as ptxas reports them for the Makefile's target.
#   tools/ptxas-report.sh [kernels/foo.cu ...]
# Library kernels (cub) are left out.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
NVCC=${NVCC:-nvcc}
GENCODE=${CUDA_GENCODE:--gencode arch=compute_90a,code=sm_90a}
[ $# -gt 0 ] || set -- kernels/*.cu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "$@"; do
	$NVCC -O3 $GENCODE -std=c++17 -Ilib -Ikernels -Xptxas -v -c "$f" -o "$tmp/x.o" 2>&1 |
	awk -v F="$(basename "$f")" '
		/Compiling entry/ { match($0, /'"'"'[^'"'"']*'"'"'/); n = substr($0, RSTART + 1, RLENGTH - 2) }
		/stack frame/ { st = $0; sub(/^ */, "", st) }
		/Used [0-9]+ registers/ {
			match($0, /Used [0-9]+ registers/); r = substr($0, RSTART + 5, RLENGTH - 15)
			if (n !~ /cub|CUB/) print F, n, r, st
		}' |
	while read -r file name regs rest; do
		printf '%-14s %-44s %4s regs  %s\n' "$file" "$(echo "$name" | c++filt | sed 's/(.*//; s/^void //')" "$regs" "$rest"
	done
done
