# gpt-sched: presets against the record's formulas, shapes, usage errors,
# --check on good and bad streams, atomic -o, and the man pages' examples.
. "$(dirname "$0")/lib.sh"

t_conventions gpt-sched --check "$T/missing"

# ---- the record preset ------------------------------------------------------
t_run "preset record" 0 gpt-sched --preset record-2025-01-04
t_stderr_empty
cp "$OUT" "$T/record.sched"
t_true "preset: 1393 lines" test "$(wc -l <"$T/record.sched")" -eq 1393
t_true "preset: line 1" test "$(sed -n 1p "$T/record.sched")" = "#gpt-sched 1"
t_true "preset: header" test "$(sed -n 2p "$T/record.sched")" = \
	"step lr_scale momentum window eval ckpt train"
# Sample rows (row s is line s+3); the values are the float64 results of
# the spec's formulas, checked at every step by tests/unit/check_sched.c.
while read -r want; do
	s=${want%% *}
	got=$(sed -n "$((s + 3))p" "$T/record.sched")
	if [ "$got" = "$want" ]; then t_ok "preset: row $s"; else t_fail "preset: row $s" "got '$got', want '$want'"; fi
done <<'EOF'
0 1 0.85 1 1 0 1
1 1 0.8503333333333333 1 0 0 1
102 1 0.8839999999999999 1 0 0 1
103 1 0.8843333333333334 2 0 0 1
125 1 0.8916666666666666 2 1 0 1
300 1 0.95 3 0 0 1
834 1 0.95 9 0 0 1
835 0.9982014388489208 0.95 9 0 0 1
1338 0.09352517985611514 0.95 13 0 0 1
1339 0.09172661870503585 0.95 14 0 0 1
1375 0.02697841726618716 0.95 14 1 0 1
1389 0.0017985611510790145 0.95 14 0 0 1
1390 0 0.95 14 1 0 0
EOF

# Every row against the formulas evaluated by awk (float64 as well), for the
# record and for the compressed 300-step schedule.
awk_stream() { # N EVAL_EVERY
	awk -v n="$1" -v k="$2" 'BEGIN {
		print "#gpt-sched 1"; print "step lr_scale momentum window eval ckpt train"
		for (s = 0; s <= n; s++) {
			x = s / n; t = 1 - s / n; lr = (t >= 0.4) ? 1 : t / 0.4
			f = s / 300; if (f > 1) f = 1
			w = int(((1 - x) * 128 + x * 1856) / 128)
			printf "%d %.17g %.17g %d %d 0 %d\n", s, lr, (1 - f) * 0.85 + f * 0.95, w, (s % k == 0 || s == n), (s < n)
		}
	}'
}
same_numbers() { # FILE1 FILE2: same lines, every field numerically equal
	awk 'NR == FNR { a[FNR] = $0; n = FNR; next }
	     { if (FNR <= 2) { if ($0 != a[FNR]) exit 1; next }
	       split(a[FNR], f); if (NF != 7) exit 1
	       for (i = 1; i <= NF; i++) if ($i + 0 != f[i] + 0) { print "line " FNR ": " $0 " vs " a[FNR]; exit 1 } }
	     END { if (FNR != n) exit 1 }' "$1" "$2"
}
awk_stream 1390 125 >"$T/awk1390"
t_true "preset = awk formulas at every step (1390)" same_numbers "$T/awk1390" "$T/record.sched"
t_run "preset --steps 300" 0 gpt-sched --preset record-2025-01-04 --steps 300 --eval-every 50
cp "$OUT" "$T/short.sched"
awk_stream 300 50 >"$T/awk300"
t_true "preset = awk formulas at every step (300)" same_numbers "$T/awk300" "$T/short.sched"
t_true "300: 303 lines" test "$(wc -l <"$T/short.sched")" -eq 303
t_true "300: last row" test "$(tail -n 1 "$T/short.sched")" = "300 0 0.95 14 1 0 0"
t_true "300: row 180 is the last at full rate" test "$(sed -n 183p "$T/short.sched" | cut -d' ' -f2)" = 1
t_true "300: row 181 starts the cooldown" test "$(sed -n 184p "$T/short.sched" | cut -d' ' -f2)" = 0.9916666666666665

t_run "preset --momentum-warmup 0 --ckpt-every 500" 0 gpt-sched -p record-2025-01-04 --momentum-warmup 0 --ckpt-every 500
t_true "momentum-warmup 0: row 0" test "$(sed -n 3p "$OUT")" = "0 1 0.95 1 1 0 1"
t_true "ckpt rows 500 1000 1390" test "$(awk 'NR > 2 && $6 == 1 { printf "%s ", $1 }' "$OUT")" = "500 1000 1390 "

t_run "--absolute" 0 gpt-sched --preset record-2025-01-04 --absolute --base-lr 1,2,3,4
t_true "--absolute: header" test "$(sed -n 2p "$OUT")" = \
	"step lr_embed lr_head lr_scalar lr_muon momentum window eval ckpt train"
t_true "--absolute: row 1389" test "$(sed -n 1392p "$OUT")" = \
	"1389 0.0017985611510790145 0.003597122302158029 0.0053956834532370435 0.007194244604316058 0.95 14 0 0 1"

# ---- shapes -----------------------------------------------------------------
t_run "shapes" 0 gpt-sched --steps 4 --lr warmup:2:1 --momentum ramp:0.85:0.95:2 \
	--window steps:1@0,2@2 --eval-every 2 --ckpt-every 3
t_stdout_is "#gpt-sched 1
step lr_scale momentum window eval ckpt train
0 0.5 0.85 1 1 0 1
1 1 0.8999999999999999 1 0 0 1
2 1 0.95 2 1 0 1
3 1 0.95 2 0 1 1
4 1 0.95 2 1 1 0"
t_run "shapes: linear, points, grow" 0 gpt-sched --steps 4 --lr linear:1:0 \
	--momentum points:0.5@0,0.9@2 --window grow:1:2
t_stdout_is "#gpt-sched 1
step lr_scale momentum window eval ckpt train
0 1 0.5 1 0 0 1
1 0.75 0.7 1 0 0 1
2 0.5 0.9 1 0 0 1
3 0.25 0.9 2 0 0 1
4 0 0.9 2 1 0 0"
t_run "shapes: preset with an lr override" 0 gpt-sched --preset record-2025-01-04 --steps 10 \
	--lr cosine:1:0 --eval-every 0
t_true "override: row 5" test "$(sed -n 8p "$OUT")" = "5 0.5 0.8516666666666667 7 0 0 1"
t_true "override: one eval" test "$(awk 'NR > 2 && $5 == 1' "$OUT" | wc -l)" -eq 1

# ---- usage errors (exit 2) ----------------------------------------------------
G="--steps 10 --lr const:1 --momentum const:0.9 --window const:1"
while IFS='|' read -r args want; do
	# shellcheck disable=SC2086
	t_run "usage: $args" 2 gpt-sched $args
	t_stderr_has "^gpt-sched: .*$want"
	t_stderr_has "Try 'gpt-sched --help'"
done <<EOF
|give --preset NAME
--steps 10|no --lr shape
--steps 10 --lr const:1 --momentum const:0.9|no --window shape
$G --lr foo:1|--lr: shape 'foo:1': unknown shape 'foo'
$G --lr linear:1|linear takes 2 parameters, not 1
$G --lr const:x|V 'x' is not a finite number
$G --lr const|no parameters
$G --lr steps:1@5|the first point must be at step 0
$G --lr points:1@0,2@4,3@4|steps must increase
$G --lr trapezoid:0:2|cooldown fraction
$G --lr cosine:1:-1|lr_scale shape 'cosine:1:-1': value -0.309017 at step 6 is negative
$G --momentum ramp:0.85:0.95:-1|K '-1' is not a step count
$G --momentum linear:0.5:1.5|momentum shape 'linear:0.5:1.5': value .* at step 6 is outside \[0, 1\]
$G --window linear:1:14|'linear' gives fractional values
$G --window const:0|window 0 is not an integer
$G --window grow:3:2|B \(2\) is less than A \(3\)
$G --window grow:0:2|window shape 'grow:0:2': value 0 at step 0
--steps 0 --lr const:1 --momentum const:0.9 --window const:1|--steps: '0' is not an integer from 1
--steps x --lr const:1 --momentum const:0.9 --window const:1|--steps: 'x'
$G --eval-every -1|--eval-every: '-1'
$G --ckpt-every 1.5|--ckpt-every: '1.5'
$G --absolute --base-lr 1,2|--base-lr: '1,2' is not four numbers
$G --absolute --base-lr 1,2,3,-4|--base-lr: '1,2,3,-4'
$G --base-lr 1,2,3,4|--base-lr is used with --absolute
$G --momentum-warmup 10|--momentum-warmup applies to a --preset
--preset record-2025-01-04 --momentum-warmup 10 --momentum const:1|conflicts with --momentum
--preset nope|unknown preset 'nope' \(known: record-2025-01-04\)
--preset record-2025-01-04 extra|unexpected argument 'extra'
--check - --steps 3|--check takes no other option \(got --steps\)
--check - -o x|--check takes no other option \(got --output\)
--check - --lr const:1|--check takes no other option \(got --lr\)
--absolute --check -|--check takes no other option \(got --absolute\)
EOF

# ---- --check ----------------------------------------------------------------
t_run "check record" 0 gpt-sched --check "$T/record.sched"
t_stdout_is '{"rows":1391,"first_step":0,"last_step":1390,"train_steps":1390,"evals":13,"ckpts":0,"min_window":1,"max_window":14,"lr":"scale"}'
t_run_in "check stdin (300)" 0 "$T/short.sched" gpt-sched --check -
t_stdout_is '{"rows":301,"first_step":0,"last_step":300,"train_steps":300,"evals":7,"ckpts":0,"min_window":1,"max_window":14,"lr":"scale"}'
t_run_in "check the awk stream" 0 "$T/awk1390" gpt-sched --check -
printf '#gpt-sched 1\n# resumed\nwindow step momentum lr_embed lr_head lr_scalar lr_muon ckpt\n3 700 0.9 1 1 1 1 1\n3 701 0.9 1 1 1 1 0\n' >"$T/abs.sched"
t_run "check absolute, resumed" 0 gpt-sched -c "$T/abs.sched"
t_stdout_is '{"rows":2,"first_step":700,"last_step":701,"train_steps":2,"evals":0,"ckpts":1,"min_window":3,"max_window":3,"lr":"absolute"}'

H='#gpt-sched 1\nstep lr_scale momentum window eval ckpt train\n'
while IFS='|' read -r body want; do
	# shellcheck disable=SC2059
	printf "$body" >"$T/bad.sched"
	t_run "check bad: $want" 1 gpt-sched --check "$T/bad.sched"
	t_stderr_has "^gpt-sched: $T/$want"
	t_true "check bad prints nothing: $want" test ! -s "$OUT"
done <<EOF
|bad.sched: empty; a schedule stream starts with the line '#gpt-sched 1'
#gpt-sched 2\n|bad.sched:1: schedule stream version 2 is not supported
step lr_scale momentum window\n|bad.sched:1: not a schedule stream
#gpt-sched 1\nstep lr_scale momentum\n|bad.sched:2: header: missing column 'window'
#gpt-sched 1\nstep lr_scale momentum window wat\n|bad.sched:2: header: unknown column 'wat'
#gpt-sched 1\nstep lr_scale momentum window window\n|bad.sched:2: header: duplicate column 'window'
#gpt-sched 1\nstep lr_embed lr_head momentum window\n|bad.sched:2: header: missing column 'lr_scalar'
#gpt-sched 1\nstep lr_scale lr_embed lr_head lr_scalar lr_muon momentum window\n|bad.sched:2: header: both 'lr_scale'
${H}|bad.sched: no rows
${H}0 1 0.85 1 1 0\n|bad.sched:3: column 'train': missing value
${H}0 1 0.85 1 1 0 1 1\n|bad.sched:3: extra field '1' after column 'train'
${H}0 1 0.85 1 1 0 1\n1 1 x 1 0 0 1\n|bad.sched:4: column 'momentum': 'x' is not a decimal number
${H}0 1 0.85 1 1 0 1\n1 nan 0.85 1 0 0 1\n|bad.sched:4: column 'lr_scale': 'nan' is not a finite number
${H}0 -1 0.85 1 1 0 1\n|bad.sched:3: column 'lr_scale': -1 is negative
${H}0 1 0.85 1.5 1 0 1\n|bad.sched:3: column 'window': '1.5' is not an integer
${H}0 1 0.85 1 1 0 1\n\n# gap\n2 1 0.85 1 0 0 1\n|bad.sched:6: column 'step': 2 after step 0
${H}0 1 0.85 1 1 0 0\n1 1 0.85 1 1 0 0\n|bad.sched:4: a row after step 0, which has train 0
${H}0 1 0.85 1 1 0 1|bad.sched:3: the last line has no newline
EOF

# ---- -o: atomic output ----------------------------------------------------------
t_run "-o writes the file" 0 gpt-sched --preset record-2025-01-04 -o "$T/o.sched"
t_true "-o: same bytes as stdout" cmp "$T/o.sched" "$T/record.sched"
t_true "-o: no temporary left" test -z "$(ls -A "$T" | grep '^\.o\.sched')"
t_run "-o with a usage error" 2 gpt-sched --preset record-2025-01-04 --lr nope -o "$T/none.sched"
t_true "-o: a failed run leaves no file" test ! -e "$T/none.sched"
echo keep >"$T/keep.sched"
t_run "-o over a file, failing" 2 gpt-sched --steps 3 --lr const:-1 --momentum const:0 --window const:1 -o "$T/keep.sched"
t_true "-o: the old file is untouched" test "$(cat "$T/keep.sched")" = keep
# interrupted in the middle of a long stream: neither the file nor a temporary remains
mkdir "$T/int"
gpt-sched --preset record-2025-01-04 --steps 5000000 --eval-every 0 -o "$T/int/big.sched" 2>/dev/null &
pid=$!
for _ in $(seq 200); do
	[ -n "$(ls -A "$T/int")" ] && break
	sleep 0.05
done
sleep 0.2
seen=$(ls -A "$T/int")
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
t_true "interrupted: the temporary existed while writing" test -n "$seen"
t_true "interrupted: killed by SIGTERM" test "$rc" -eq 143
t_true "interrupted: nothing left" test -z "$(ls -A "$T/int")"
if [ -w /dev/full ]; then
	t_run "write error on stdout" 1 sh -c 'gpt-sched --preset record-2025-01-04 >/dev/full'
	t_stderr_has "^gpt-sched: .*(No space left|write failed)"
fi

