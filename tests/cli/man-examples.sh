#!/usr/bin/env bash
# Run every EXAMPLES block of every man page (man/*.1, man/*.5).
#
# An example is a `.Bd -literal` ... `.Ed` block inside the EXAMPLES
# section. Its lines are shell commands; mdoc escapes are undone (\e -> \,
# \(aq -> ', \- -> -, \& -> nothing). Each block runs with bash -e in its
# own scratch directory with build/bin on PATH and GPT_TOP set, so it may use
# the files that ship in $GPT_TOP/data. A block whose first line is the comment
# "# not run: REASON" is skipped (say why: it needs a GPU, a network...).
. "$(dirname "$0")/lib.sh"

extract() { # page -> blocks separated by a line "@@END@@"
	awk '
	/^\.Sh / { inex = ($2 == "EXAMPLES") }
	inex && /^\.Bd -literal/ { inblock = 1; next }
	inex && inblock && /^\.Ed/ { inblock = 0; print "@@END@@"; next }
	inex && inblock { print }
	' "$1" | sed -e 's/\\e/\\/g' -e "s/\\\\(aq/'/g" -e 's/\\-/-/g' -e 's/\\&//g'
}

for page in "$TOP"/man/*.[15]; do
	[ -e "$page" ] || continue
	name=$(basename "$page")
	n=0
	block=""
	while IFS= read -r line; do
		if [ "$line" = "@@END@@" ]; then
			n=$((n + 1))
			case "$block" in
			"# not run:"*) echo "skip $name example $n: ${block%%$'\n'*}" ;;
			*)
				d=$(mktemp -d "$T/ex-XXXXXX")
				if (cd "$d" && printf '%s\n' "$block" | bash -e -o pipefail) >"$d/.out" 2>&1; then
					t_ok "$name example $n"
				else
					t_fail "$name example $n" "$(tail -5 "$d/.out")"
				fi
				;;
			esac
			block=""
		else
			block+="${block:+$'\n'}$line"
		fi
	done < <(extract "$page")
	[ $n -gt 0 ] || t_fail "$name has EXAMPLES" "no .Bd -literal block in its EXAMPLES section"
done
