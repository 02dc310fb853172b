# lib.sh - sourced by tests/gpu/emu/run*.sh: build a GPU test program
# against kernels compiled for the host emulation (emu.h, emu.cpp; see
# run.sh) and run it.
#   emu_build BUILD_DIR OUT_NAME TEST KERNEL...
#       compiles kernels/KERNEL.cu (as C++) and emu.cpp into
#       BUILD_DIR/OUT_NAME, tests/gpu/TEST.c (as C11, with EMU_TEST_FLAGS,
#       e.g. -DGPT_EMU) and links BUILD_DIR/OUT_NAME/TEST against
#       BUILD_DIR/libgpt.a; EMU_KERNEL_FLAGS adds to the kernels' flags.
#       Prints the program's path; returns 1 at the first step that fails
#       (every step is checked: a command substitution does not inherit
#       set -e).
#   emu_modes PROGRAM
#       runs it in the four modes: EMU_CP=defer EMU_SCHED=rr, now/warp,
#       now/wg, tma/wg (run.sh says what each catches), or once in the
#       environment's mode when EMU_CP or EMU_SCHED is set; fails if any
#       run failed.
# Needs g++ (CXX) and cc (CC); run after make.
emu_build() {
	local B=$1 o=$1/$2 test=$3 f objs=()
	shift 3
	mkdir -p "$o"
	local CXX=${CXX:-g++} CC=${CC:-cc}
	local flags="-O2 -g -DATT_EMULATE -Itests/gpu/emu -Ilib -Ikernels"
	flags="$flags -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-psabi ${EMU_KERNEL_FLAGS:-}"
	for f in "$@"; do
		$CXX -std=c++17 $flags -x c++ -c "kernels/$f.cu" -o "$o/$f.o" >&2 || return 1
		objs+=("$o/$f.o")
	done
	$CXX -std=c++17 $flags -U_FORTIFY_SOURCE -c tests/gpu/emu/emu.cpp -o "$o/emu.o" >&2 || return 1
	$CC -std=c11 -D_GNU_SOURCE ${EMU_TEST_FLAGS:-} -O2 -g -Wall -Wextra -Wno-unused-parameter \
		-Itests/gpu/emu -Ilib -Ikernels -Itests/unit $(pkg-config --cflags check 2>/dev/null) \
		-c "tests/gpu/$test.c" -o "$o/$test.o" >&2 || return 1
	$CXX -o "$o/$test" "$o/$test.o" "${objs[@]}" "$o/emu.o" "$B/libgpt.a" \
		$(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm) -lzstd -lm -pthread >&2 ||
		return 1
	echo "$o/$test"
}

emu_modes() {
	local prog=$1 mode rc=0
	if [ -n "${EMU_CP:-}${EMU_SCHED:-}" ]; then
		"$prog"
		return
	fi
	for mode in "defer rr" "now warp" "now wg" "tma wg"; do
		set -- $mode
		echo "== emulation: EMU_CP=$1 EMU_SCHED=$2"
		EMU_CP=$1 EMU_SCHED=$2 "$prog" || rc=1
	done
	return $rc
}
