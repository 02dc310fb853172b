# lib.sh - helpers for the command-line tests (sourced by tests/cli/*.sh).
#
#   t_run NAME EXPECTED_EXIT CMD...   run CMD, capture $OUT (stdout file),
#                                     $ERR (stderr file); "ok NAME" or "FAIL NAME"
#   t_stdout_has REGEX / t_stderr_has REGEX / t_stdout_is TEXT
#                                     assertions on the last t_run
#   t_ok NAME / t_fail NAME MSG       record a result
#   t_true NAME CMD...                passes if CMD exits 0
# A test script runs with build/bin first on PATH, in a fresh $T directory
# that is removed at exit. $TOP is the source tree, $SHARED ../shared/data
# (may be absent: t_need_shared skips the script then).
set -u
TOP=${GPT_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/gpt-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
SHARED=${GPT_SHARED_DATA:-$TOP/../shared/data}
OUT=$T/.stdout
ERR=$T/.stderr
LAST=""
LAST_RC=0

t_ok() { echo "ok $1"; }
t_fail() { echo "FAIL $1"; shift; [ $# -gt 0 ] && echo "  $*"; return 0; }

t_run() {
	local name=$1 want=$2; shift 2
	LAST=$name
	"$@" >"$OUT" 2>"$ERR" </dev/null
	LAST_RC=$?
	if [ "$LAST_RC" -eq "$want" ]; then
		t_ok "$name"
	else
		t_fail "$name" "exit $LAST_RC, wanted $want: $*; stderr: $(head -c 400 "$ERR")"
	fi
}

# Like t_run but with stdin from a file.
t_run_in() {
	local name=$1 want=$2 input=$3; shift 3
	LAST=$name
	"$@" >"$OUT" 2>"$ERR" <"$input"
	LAST_RC=$?
	if [ "$LAST_RC" -eq "$want" ]; then
		t_ok "$name"
	else
		t_fail "$name" "exit $LAST_RC, wanted $want: $*; stderr: $(head -c 400 "$ERR")"
	fi
}

t_stdout_has() {
	if grep -Eq -- "$1" "$OUT"; then t_ok "$LAST: stdout ~ $1"; else t_fail "$LAST: stdout ~ $1" "stdout: $(head -c 300 "$OUT")"; fi
}
t_stderr_has() {
	if grep -Eq -- "$1" "$ERR"; then t_ok "$LAST: stderr ~ $1"; else t_fail "$LAST: stderr ~ $1" "stderr: $(head -c 300 "$ERR")"; fi
}
t_stderr_empty() {
	if [ ! -s "$ERR" ]; then t_ok "$LAST: stderr empty"; else t_fail "$LAST: stderr empty" "stderr: $(head -c 300 "$ERR")"; fi
}
t_stdout_is() {
	if [ "$(cat "$OUT")" = "$1" ]; then t_ok "$LAST: stdout is"; else t_fail "$LAST: stdout is" "got: $(head -c 300 "$OUT")"; fi
}
t_true() {
	local name=$1; shift
	if "$@" >/dev/null 2>&1; then t_ok "$name"; else t_fail "$name" "command failed: $*"; fi
}
t_need_shared() {
	if [ ! -r "$SHARED/README.md" ]; then echo "skip: ../shared/data not found" >&2; exit 0; fi
}

# The conventions every program follows: --help, --version, a bad option,
# a missing file. Usage: t_conventions PROG [ARGS that need a missing file...]
t_conventions() {
	local p=$1; shift
	t_run "$p --help" 0 "$p" --help
	t_stdout_has "^Usage: $p"
	t_stderr_empty
	t_run "$p --version" 0 "$p" --version
	t_stdout_has "^$p \(gpt-\*\) [0-9]"
	t_run "$p bad option" 2 "$p" --no-such-option
	t_stderr_has "^$p: |^Usage: $p"
	t_stderr_has "Try '$p --help'"
	if [ $# -gt 0 ]; then
		t_run "$p missing file" 1 "$p" "$@"
		t_stderr_has "^$p: .*$T/missing.*No such file"
	fi
}
