#!/usr/bin/env bash
# record-fetch.sh - put the NanoGPT speedrun record's own training script
# (record of 2025-01-04, "SoftCap") into .carry/record/train_gpt.py, the
# git-ignored folder that travels to the GPU machine, where
# tools/record_run.py runs it as an outside reference. The script is never
# committed to this repository: this tool extracts it from a copy of the
# record's log each time.
#
#   tools/record-fetch.sh [-o OUT] [SOURCE]
#
# SOURCE (default: the local mirror below) is one of
#   - a git directory of KellerJordan/modded-nanogpt (bare or not): the log is
#     read with `git show HEAD:$LOG`; the default is $RECORD_MIRROR, else
#     /work/.mirror/KellerJordan+modded-nanogpt/repo;
#   - a file: the record's log (script, then a line of 100 '=', then the run's
#     output) or a plain train_gpt.py;
#   - an http(s) URL of such a file (fetched with curl), for example
#     https://raw.githubusercontent.com/KellerJordan/modded-nanogpt/master/$LOG
# with LOG = records/track_1_short/2025-01-04_SoftCap/31d6c427-f1f7-4d8a-91be-a67b5dcd13fd.txt.
#
# The log holds the script as the record printed it (print0(code)): the
# script's lines, one empty line added by print(), then 100 '='. This tool
# keeps the lines before the '=' line, drops that added empty line, checks
# that the result compiles (python3) and looks like the record (its GPT class,
# its Muon, its loader), and prints its sha256. The record's script is 558
# lines, sha256 dab35b5c...4d46 (EXPECTED below); another hash gives a warning
# (record_run.py's patches may then not apply), not an error.
# -o OUT writes elsewhere (default: .carry/record/train_gpt.py under the
# source tree). Exit 0 on success, 1 on failure, 2 on bad usage.
set -euo pipefail
LOG=records/track_1_short/2025-01-04_SoftCap/31d6c427-f1f7-4d8a-91be-a67b5dcd13fd.txt
EXPECTED=dab35b5cfc5adab1df3d5844f46888ac67b10efd469f561b893bda58c5754d46
top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/.carry/record/train_gpt.py
prog=record-fetch.sh
usage() { sed -n '/^#   tools/p' "$0" | sed 's/^# *//; s/^/Usage: /' >&2; exit 2; }
while getopts ho: opt; do
	case $opt in
	o) out=$OPTARG ;;
	h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
src=${1:-${RECORD_MIRROR:-/work/.mirror/KellerJordan+modded-nanogpt/repo}}

tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.py"' EXIT
case $src in
http://* | https://*)
	curl -fsSL "$src" >"$tmp" || { echo "$prog: cannot fetch $src" >&2; exit 1; } ;;
*)
	if [ -d "$src" ]; then
		git -C "$src" show "HEAD:$LOG" >"$tmp" 2>/dev/null ||
			{ echo "$prog: $src: no $LOG at HEAD (not a modded-nanogpt git directory?)" >&2; exit 1; }
	elif [ -r "$src" ]; then
		cat -- "$src" >"$tmp"
	else
		echo "$prog: $src: no such file or directory (give the log, a git directory or a URL)" >&2
		exit 1
	fi ;;
esac

# the script: every line before the first line of exactly 100 '='; without
# such a line the file is taken as a plain script
awk 'length($0) == 100 && /^=+$/ { exit } { print }' "$tmp" >"$tmp.py"
if grep -qx '====================================================================================================' "$tmp"; then
	sed -i '$ { /^$/d }' "$tmp.py" # the empty line print() added after the code
fi
for want in '^import torch$' '^class GPT\(nn.Module\):' '^class Muon\(torch.optim.Optimizer\):' \
	'^def _load_data_shard\(' '^class DistributedDataLoader:' '^# int main$'; do
	if ! grep -Eq "$want" "$tmp.py"; then
		echo "$prog: $src: the extracted script lacks /$want/: not the record's train_gpt.py" >&2
		exit 1
	fi
done
python3 - "$tmp.py" <<'PY' || { echo "$prog: $src: the extracted script does not compile" >&2; exit 1; }
import sys
compile(open(sys.argv[1]).read(), sys.argv[1], "exec")
PY
sum=$(sha256sum "$tmp.py" | cut -d' ' -f1)
mkdir -p "$(dirname "$out")"
mv "$tmp.py" "$out"
chmod 644 "$out"
echo "$prog: wrote $out ($(wc -l <"$out") lines, sha256 $sum)" >&2
if [ "$sum" != "$EXPECTED" ]; then
	echo "$prog: warning: not the 2025-01-04 record's script (sha256 $EXPECTED expected); record_run.py's patches may not apply" >&2
fi
