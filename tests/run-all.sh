#!/usr/bin/env bash
# Run the test suites and print one closing line "N passed, N failed".
#   tests/run-all.sh BUILD_DIR [unit|cli|emu|gpu|all]
# Unit tests: every build/tests/check_* binary (Check prints its own
# "NN%: Checks: N, Failures: N, Errors: N" summary).
# CLI tests: every tests/cli/*.sh, run with build/bin first on PATH; each
# prints "ok"/"FAIL" lines through tests/cli/lib.sh.
# Emulated attention kernels: tests/gpu/gpu_attention.c against kernels/attention_*
# compiled for the host emulation (run_emu below); the same for
# tests/gpu/gpu_mlp.c and kernels/mlp_gemm.cu (run_emu_mlp), and for
# tests/gpu/gpu_head_q.c and kernels/head_q.cu (run_emu_head).
# GPU tests: every build/tests/gpu_* binary and tests/gpu/*.sh script (make check-gpu).
# all: unit, cli and emu.
set -u
B=${1:-build}
what=${2:-all}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
B=$(cd "$B" && pwd)
export PATH="$B/bin:$PATH" GPT_TOP="$top" GPT_BUILD="$B"
passed=0 failed=0 failures=()

run_unit() {
	local t out
	for t in "$B"/tests/check_*; do
		[ -x "$t" ] || continue
		out=$("$t" 2>&1); rc=$?
		printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks|^[^:]+:[0-9]+:[EF]:' | sed "s|^|$(basename "$t"): |"
		local n f e
		n=$(printf '%s\n' "$out" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' | tail -1)
		if [ -z "$n" ]; then
			printf '%s\n' "$out" | tail -20
			failed=$((failed + 1)); failures+=("$(basename "$t") (crashed, rc=$rc)")
			continue
		fi
		set -- $n
		passed=$((passed + $1 - $2 - $3)); failed=$((failed + $2 + $3))
		[ $rc -eq 0 ] && [ $(($2 + $3)) -eq 0 ] || failures+=("$(basename "$t")")
	done
}

run_cli() { run_scripts tests/cli/*.sh; }

# scripts using tests/cli/lib.sh: count their ok/FAIL lines
run_scripts() {
	local t out rc p f
	for t in "$@"; do
		[ -f "$t" ] || continue
		[ "$(basename "$t")" = lib.sh ] && continue
		out=$(bash "$t" 2>&1); rc=$?
		p=$(printf '%s\n' "$out" | grep -c '^ok ')
		f=$(printf '%s\n' "$out" | grep -c '^FAIL ')
		printf '%s\n' "$out" | grep -E '^FAIL |^  ' | sed "s|^|$(basename "$t"): |"
		if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
			printf '%s\n' "$out" | tail -20
			f=1
		fi
		echo "$(basename "$t"): $p passed, $f failed"
		passed=$((passed + p)); failed=$((failed + f))
		[ "$f" -eq 0 ] || failures+=("$t")
	done
}

run_gpu() {
	local t
	for t in "$B"/tests/gpu_*; do
		[ -x "$t" ] || continue
		out=$("$t" 2>&1); rc=$?
		printf '%s\n' "$out"
		n=$(printf '%s\n' "$out" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' | tail -1)
		if [ -z "$n" ]; then failed=$((failed + 1)); failures+=("$(basename "$t")"); continue; fi
		set -- $n
		passed=$((passed + $1 - $2 - $3)); failed=$((failed + $2 + $3))
	done
	run_scripts tests/gpu/*.sh
}

# A test program in the host emulation (tests/gpu/emu): run_emu_prog NAME
# DESCRIPTION RUNS COMMAND... runs the command (an emu script), shows its
# failures, and counts the Check summaries of its RUNS runs (one per
# scheduling mode); fewer or more summaries count as a failure.
run_emu_prog() {
	local name=$1 desc=$2 runs=$3 out n p=0 f=0 c x y
	shift 3
	if ! command -v "${CXX:-g++}" >/dev/null; then
		echo "$name: skipped (needs g++)"
		return
	fi
	out=$("$@" 2>&1)
	printf '%s\n' "$out" | grep -E '^  FAIL |^[^:]+:[0-9]+:[EF]:|^emu: ' | sed "s|^|$name: |"
	n=$(printf '%s\n' "$out" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p')
	if [ "$(printf '%s\n' "$n" | grep -c .)" -ne "$runs" ]; then
		printf '%s\n' "$out" | tail -20
		failed=$((failed + 1)); failures+=("$name (no result)")
		return
	fi
	while read -r c x y; do
		p=$((p + c - x - y)); f=$((f + x + y))
	done <<< "$n"
	echo "$name ($desc, host emulation): $p passed, $f failed"
	passed=$((passed + p)); failed=$((failed + f))
	[ "$f" -eq 0 ] || failures+=("$name")
}

# The attention kernels (mma.sync and wgmma): gpu_attention's cases up to
# T = 384 (three blocks: the stage rotations and the backward's flags
# between key blocks), in the mode where a missing cp.async / wgmma wait
# reads stale data. About 1-2 minutes; tests/gpu/emu/run.sh runs all four
# modes up to T = 512.
run_emu() {
	run_emu_prog emu "attention kernels" 1 env EMU_CP=defer EMU_SCHED=rr GPT_ATTN_MAX_T=384 \
		CK_RUN_CASE=attn tests/gpu/emu/run.sh "$B"
}
# The fused MLP products (kernels/mlp_gemm.cu): the four modes of
# tests/gpu/emu/run-mlp.sh, about 40 s.
run_emu_mlp() { run_emu_prog emu-mlp "fused MLP products, 4 modes" 4 tests/gpu/emu/run-mlp.sh "$B"; }
# The row kernels of the head's Q path (kernels/head_q.cu):
# tests/gpu/emu/run-head.sh, a few seconds.
run_emu_head() { run_emu_prog emu-head "head Q-path row kernels" 1 tests/gpu/emu/run-head.sh "$B"; }

case $what in
unit) run_unit ;;
cli) run_cli ;;
emu) run_emu; run_emu_mlp; run_emu_head ;;
gpu) run_gpu ;;
all) run_unit; run_cli; run_emu; run_emu_mlp; run_emu_head ;;
*) echo "run-all.sh: unknown suite '$what'" >&2; exit 2 ;;
esac

for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
