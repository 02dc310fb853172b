# gpt-tokshard: reference ids (fixtures made by tools/make-tok-fixtures.sh),
# text and JSON lines, thread independence, shard rollover, the validation
# split, import/export/decode/stats, every kind of bad input, and the
# shared Gutenberg validation text against its reference tokens.
. "$(dirname "$0")/lib.sh"

FIX=$TOP/tests/fixtures/tok
P=gpt-tokshard

# ids of a raw .bin (or of a shard, through --export), one per line
ids_of_bin() { od -An -v -tu2 -j1024 "$1" | tr -s ' ' '\n' | sed '/^$/d'; }
ids_of_shard() { $P --export -o "$T/ids_tmp.bin" "$1" && ids_of_bin "$T/ids_tmp.bin"; }
core() { sed 's/.*\("documents":[0-9]*,"tokens":[0-9]*,"bytes":[0-9]*\).*/\1/' "$@"; } # of a --stats line
ntok() { od -An -tu4 -j8 -N4 "$1" | tr -d ' '; } # header token count of a .bin

t_conventions $P --stats "$T/missing"

# ---- usage errors ---------------------------------------------------------
t_run "no output" 2 $P "$FIX/docs.txt"
t_stderr_has "no output"
t_run "bad pattern %s" 2 $P -o "$T/x_%s.bin" "$FIX/docs.txt"
t_stderr_has "one %d"
t_run "two conversions" 2 $P -o "$T/x_%d_%d.bin" "$FIX/docs.txt"
t_run "shard size 0" 2 $P -s 0 -o "$T/x_%d.bin" "$FIX/docs.txt"
t_run "shard size too big" 2 $P -s 3G -o "$T/x_%d.bin" "$FIX/docs.txt"
t_run "threads 0" 2 $P -t 0 --stats "$FIX/docs.txt"
t_run "jsonl and text" 2 $P --jsonl --text --stats "$FIX/docs.txt"
t_run "empty delimiter" 2 $P --delimiter= --stats "$FIX/docs.txt"
t_run "bad escape" 2 $P --delimiter='\q' --stats "$FIX/docs.txt"
t_run "stats on stdout twice" 2 $P --stats -o - "$FIX/docs.txt"
t_run "val without output" 2 $P --val-tokens 10 --stats "$FIX/docs.txt"
t_run "stdin twice" 2 $P --stats - -
t_run "modes exclusive" 2 $P --export --decode x.bin.zst
t_run "a directory" 1 $P --stats "$T"
t_stderr_has "is a directory"
t_run "missing vocab" 1 $P --vocab "$T/novocab" --stats "$FIX/docs.txt"
t_stderr_has "novocab/vocab.bpe"

# ---- the reference ids ----------------------------------------------------
ids_of_file() { tr -s ' \n' '\n' <"$1" | sed '/^$/d'; }
t_run "docs.txt" 0 $P -d -o "$T/docs.bin" --raw "$FIX/docs.txt"
t_stderr_has "docs.txt:[0-9]+: NUL byte" # the fixtures hold NUL characters
ids_of_bin "$T/docs.bin" >"$T/docs.got"
t_true "docs.txt: reference ids" cmp "$T/docs.got" "$FIX/docs.ids"
t_run "docs.jsonl" 0 $P -o "$T/docsj.bin" --raw "$FIX/docs.jsonl"
t_true "docs.jsonl: reference ids" cmp "$T/docsj.bin" "$T/docs.bin"
t_run_in "stdin, --jsonl" 0 "$FIX/docs.jsonl" $P --jsonl -o "$T/docsi.bin" --raw
t_true "stdin: same ids" cmp "$T/docsi.bin" "$T/docs.bin"
zstd -q -c "$FIX/docs.txt" >"$T/docs.txt.zst"
t_run "zstd input" 0 $P -d -o "$T/docsz.bin" --raw "$T/docs.txt.zst"
t_true "zstd input: same ids" cmp "$T/docsz.bin" "$T/docs.bin"
t_run "vocab files" 0 $P --vocab "$TOP/data/gpt2" -d -o "$T/docsv.bin" --raw "$FIX/docs.txt"
t_true "vocab files: same ids" cmp "$T/docsv.bin" "$T/docs.bin"
# each file one document by default: the delimiter is then ordinary text
t_run "one document per file" 0 $P --stats "$FIX/docs.txt" "$FIX/prose.jsonl"
t_stdout_has '"files":2,"documents":21,'
# a delimiter with escapes: blank lines separate documents
printf 'one\n\ntwo\n\n\n\nthree' >"$T/para.txt"
t_run "delimiter \\n\\n" 0 $P --delimiter='\n\n' --stats "$T/para.txt"
t_stdout_has '"documents":3,"tokens":6,"bytes":11,'

# ---- threads, big documents -------------------------------------------------
zstd -qdc "$TOP/data/sample/train.txt.zst" >"$T/sample.txt"
t_run "sample, 1 thread" 0 $P -t 1 --text -o "$T/s1.bin" --raw "$T/sample.txt"
t_run "sample, 3 threads" 0 $P -t 3 --text -o "$T/s3.bin" --raw "$T/sample.txt"
t_true "threads: same tokens" cmp "$T/s1.bin" "$T/s3.bin"
t_true "sample: one document" test "$(ids_of_bin "$T/s1.bin" | grep -c '^50256$')" -eq 1
t_run "sample, docs, 2 threads" 0 $P -t 2 -d -o "$T/s2d.bin.zst" "$T/sample.txt"
t_run "sample, docs, 1 thread" 0 $P -t 1 -d -o "$T/s1d.bin.zst" "$T/sample.txt"
t_true "threads: same shard content" cmp <(zstd -qdc "$T/s1d.bin.zst") <(zstd -qdc "$T/s2d.bin.zst")
# the whole sample as one JSON line (parsed and cut by the reader)
awk 'BEGIN { printf "{\"text\": \"" } { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r"); printf "%s\\n", $0 } END { print "\"}" }' \
	"$T/sample.txt" >"$T/big.jsonl"
t_run "one big JSON line" 0 $P -t 2 -o "$T/bigj.bin" --raw "$T/big.jsonl"
t_true "big JSON line: tokens of the text" cmp "$T/bigj.bin" "$T/s1.bin"

# ---- shards: rollover, validation split, names --------------------------------
mkdir "$T/r"
t_run "rollover" 0 $P -d -s 1000 -o "$T/r/part_%06d.bin.zst" "$FIX/docs.txt"
t_true "rollover: 4 shards" test "$(ls "$T/r" | tr '\n' ' ')" = \
	"part_000000.bin.zst part_000001.bin.zst part_000002.bin.zst part_000003.bin.zst "
for i in 0 1 2 3; do ids_of_shard "$T/r/part_00000$i.bin.zst"; done >"$T/r.ids"
t_true "rollover: the same tokens" cmp "$T/r.ids" "$FIX/docs.ids"
t_true "rollover: 1000 tokens each" test "$($P --export -o - "$T/r/part_000001.bin.zst" | ntok /dev/stdin)" = 1000
t_run "val split" 0 $P -d -s 1500 --val-tokens 700 -o "$T/v/train_%02d.bin.zst" "$FIX/docs.txt"
t_true "val split: names" test "$(ls "$T/v" | tr '\n' ' ')" = "train_00.bin.zst train_01.bin.zst train_02.bin.zst val.bin.zst "
for f in val train_00 train_01 train_02; do ids_of_shard "$T/v/$f.bin.zst"; done >"$T/v.ids"
t_true "val split: the same tokens" cmp "$T/v.ids" "$FIX/docs.ids"
t_true "val split: 700 val tokens" test "$(ids_of_shard "$T/v/val.bin.zst" | wc -l)" -eq 700
t_run "val output name" 0 $P -d --val-tokens 10 --val-output "$T/v2.bin.zst" -o "$T/v2_%d.bin.zst" "$FIX/docs.txt"
t_true "val output name: written" test -s "$T/v2.bin.zst" -a -s "$T/v2_0.bin.zst"
t_run "val larger than input" 0 $P -d --val-tokens 1M -o "$T/v3/t_%d.bin.zst" "$FIX/docs.txt"
t_stderr_has "fewer than --val-tokens"
t_true "val larger: only val" test "$(ls "$T/v3")" = "val.bin.zst"
t_run "name without %d, one shard" 0 $P -d -o "$T/one.bin.zst" "$FIX/docs.txt"
t_run "name without %d, two shards" 1 $P -d -s 1000 -o "$T/two.bin.zst" "$FIX/docs.txt"
t_stderr_has "no %d"
t_true "two shards: nothing left under the name" test ! -e "$T/two.bin.zst"

# ---- stats, decode, import/export ----------------------------------------------
t_run "stats, text" 0 $P -d --stats "$FIX/docs.txt"
t_stdout_has '^\{"files":1,"documents":[0-9]+,"tokens":'"$(wc -l <"$FIX/docs.ids")"',"bytes":[0-9]+,"bytes_per_token":[0-9.]+,"invalid_utf8_bytes":0,"nul_bytes":5,"skipped_lines":0\}$'
cp "$OUT" "$T/stats.text"
# metadata that disagrees with the tokens is reported
zstd -qdc "$T/r/part_000000.bin.zst" | zstd -q -c >"$T/nometa.bin.zst"
printf 'P*M\030\071\000\000\000{"format":"gpt-shard/1","tokens":1000,"docs":1,"bytes":1}' >"$T/lie.bin.zst"
cat "$T/nometa.bin.zst" >>"$T/lie.bin.zst"
t_run "stats, lying metadata" 0 $P --stats "$T/lie.bin.zst"
t_stderr_has "lie.bin.zst: the metadata says 1 documents and 1 bytes"
t_run "stats, shards" 0 $P --stats "$T/r/"*.bin.zst
t_stdout_has '^\{"files":4,"documents":[0-9]+,"tokens":[0-9]+,"bytes":[0-9]+,"bytes_per_token":[0-9.]+\}$'
t_stderr_empty # the shards' metadata agrees with their tokens
t_run "stats, val split shards" 0 $P --stats "$T/v/"*.bin.zst
t_stderr_empty
t_true "stats: val split agrees with text" test "$(core "$OUT")" = "$(core "$T/stats.text")"
t_true "stats: shards agree with text" test "$(core "$OUT")" = "$(core "$T/stats.text")"
t_run "stats with -o" 0 $P -d --stats -s 1000 -o "$T/st_%d.bin.zst" "$FIX/docs.txt"
t_stdout_has '"shards":4'
t_run "decode" 0 $P --decode "$T/r/"*.bin.zst
t_true "decode: the text back" cmp "$OUT" "$FIX/docs.txt"
t_run "decode -o" 0 $P --decode -o "$T/dec.txt" "$T/docs.bin"
t_true "decode -o: the text back" cmp "$T/dec.txt" "$FIX/docs.txt"
t_run "export" 0 $P --export "$T/one.bin.zst"
t_true "export: the raw .bin" cmp "$T/one.bin" "$T/docs.bin"
cp "$T/docs.bin" "$T/imp.bin"
t_run "import" 0 $P --import "$T/imp.bin"
t_run "import: metadata" 0 $P --stats "$T/imp.bin.zst"
t_true "import: counts" test "$(core "$OUT")" = "$(core "$T/stats.text")"
t_run "export again" 0 $P --export -o "$T/imp2.bin" "$T/imp.bin.zst"
t_true "import/export round trip" cmp "$T/imp2.bin" "$T/docs.bin"
t_run "export needs .zst or -o" 2 $P --export "$T/docs.bin"
t_run "stdout stream" 0 $P -d -o - "$FIX/docs.txt"
t_true "stdout stream: a shard" cmp <($P --export -o - - <"$OUT") "$T/docs.bin"
t_run "decode a text file" 1 $P --decode "$FIX/docs.txt"
t_stderr_has "docs.txt"

# ---- bad input ------------------------------------------------------------
printf 'fine\nbad \377\376 bytes\nand \0 nul\nmore \300\n' >"$T/bad.txt"
t_run "invalid UTF-8" 0 $P --stats "$T/bad.txt"
t_stderr_has "bad.txt:2: invalid UTF-8"
t_stderr_has "bad.txt:3: NUL byte"
t_stdout_has '"invalid_utf8_bytes":3,"nul_bytes":1'
t_stderr_has "bad.txt: 3 bytes of invalid UTF-8 in all"
t_run "invalid UTF-8, -q" 0 $P -q --stats "$T/bad.txt"
t_stderr_empty
t_run "invalid UTF-8, --strict" 1 $P --strict -o "$T/strict_%d.bin.zst" "$T/bad.txt"
t_stderr_has "bad.txt:2: invalid UTF-8 \(--strict\)"
t_true "strict: no shard" test -z "$(ls -A "$T" | grep strict)"
t_run "invalid UTF-8 round trip" 0 $P -o "$T/bad.bin.zst" "$T/bad.txt"
t_true "invalid UTF-8: decodes to the bytes" cmp <($P --decode "$T/bad.bin.zst") <(printf '<|endoftext|>'; cat "$T/bad.txt")
printf 'nul only \0\n' >"$T/nul.txt"
t_run "NUL, --strict" 1 $P --strict --stats "$T/nul.txt"
t_stderr_has "nul.txt:1: NUL byte"

cat >"$T/bad.jsonl" <<'EOF'
{"text": "good one"}

[1, 2]
{"txt": "no text"}
{"text": 42}
{"text": "unterminated
{"text": "lone \ud800"}
{"text": ""}
{"text": "good two", "id": 7}
EOF
t_run "bad JSON lines" 0 $P --stats "$T/bad.jsonl"
t_stderr_has "bad.jsonl:3: not a JSON object; line skipped"
t_stderr_has 'bad.jsonl:4: no "text" member'
t_stderr_has 'bad.jsonl:5: "text" is not a string'
t_stderr_has "bad.jsonl:6: not JSON"
t_stderr_has "bad.jsonl:7: not JSON .*surrogate"
t_stderr_has "bad.jsonl: 5 lines skipped in all"
t_stdout_has '"documents":2,.*"skipped_lines":5'
t_run "bad JSON, --strict" 1 $P --strict -o "$T/sj_%d.bin.zst" "$T/bad.jsonl"
t_stderr_has "bad.jsonl:3: not a JSON object \(--strict\)"
t_true "strict JSON: no shard" test -z "$(ls -A "$T" | grep sj_)"
t_run "--field" 0 $P --field txt --stats "$T/bad.jsonl"
t_stdout_has '"documents":1,'

: >"$T/empty.txt"
t_run "empty input" 0 $P -o "$T/e_%d.bin.zst" "$T/empty.txt"
t_stderr_has "no documents"
t_true "empty: no shard" test ! -e "$T/e_0.bin.zst"
t_run "empty input, stdout" 0 $P -o - "$T/empty.txt"
t_true "empty: a valid empty shard" test "$($P --export -o - - <"$OUT" | ntok /dev/stdin)" = 0
t_run "empty stdin stats" 0 $P --stats
t_stdout_has '"documents":0,"tokens":0,"bytes":0,'

# one 20 MB line of words, and 2 MB without any space (one piece)
yes word | head -c 20000000 | tr '\n' ' ' >"$T/long.txt" # "word word ... word "
t_run "20 MB line" 0 $P -t 2 --stats "$T/long.txt"
t_stdout_has '"documents":1,"tokens":4000002,"bytes":20000000,'
head -c 2000000 /dev/zero | tr '\0' a >"$T/nospace.txt"
t_run "2 MB without a split point" 0 $P --stats "$T/nospace.txt"
t_stdout_has '"tokens":500001,'

head -c $(($(wc -c <"$T/docs.txt.zst") - 20)) "$T/docs.txt.zst" >"$T/trunc.txt.zst"
t_run "truncated zstd" 1 $P -o "$T/tr_%d.bin.zst" "$T/trunc.txt.zst"
t_stderr_has "trunc.txt.zst: .*(truncated|zstd)"
t_true "truncated: no shard" test -z "$(ls -A "$T" | grep tr_)"
t_run "full disk, stdout" 1 sh -c "$P -o - '$FIX/docs.txt' >/dev/full"
t_stderr_has "No space left on device"
t_run "full disk, device" 1 $P -o /dev/full "$FIX/docs.txt"
t_stderr_has "No space left on device"
t_true "no temporary files left" test -z "$(ls -A "$T" | grep '^\.' | grep -v '^\.std')"

# ---- the shared data: the Gutenberg validation text, byte for byte ----------
if [ -r "$SHARED/gutenberg_en_val.txt.zst" ]; then
	t_run "gutenberg val" 0 $P -d -o "$T/gval.bin.zst" "$SHARED/gutenberg_en_val.txt.zst"
	t_run "gutenberg val: export" 0 $P --export "$T/gval.bin.zst"
	t_true "gutenberg val: 1,264,623 tokens" test "$(ntok "$T/gval.bin")" = 1264623
	t_true "gutenberg val: the reference tokens" sh -c "zstd -qdc '$SHARED/gutenberg_en_val.gpt2.bin.zst' | cmp - '$T/gval.bin'"
else
	echo "skip: ../shared/data not found (Gutenberg reference)" >&2
fi

# ---- a terminal: binary output refused, progress drawn ----------------------
if command -v script >/dev/null 2>&1; then
	t_run "terminal refused" 2 script -qec "$P -o - '$FIX/prose.jsonl'" /dev/null
	t_stdout_has "refusing to write binary data to a terminal"
	t_run "terminal with --force" 0 script -qec "$P --force -o - '$FIX/prose.jsonl'" /dev/null
	t_run "progress on a terminal" 0 script -qec "$P -d --stats '$T/sample.txt'" /dev/null
	t_stdout_has "gpt-tokshard: [0-9.]+ MB, [0-9.]+M tokens, [0-9.]+ MB/s"
	t_run "no progress with -q" 0 script -qec "$P -q -d --stats '$T/sample.txt'" /dev/null
	t_true "no progress with -q: none" sh -c "! grep -q 'MB/s' '$OUT'"
else
	echo "skip: script(1) not found (terminal tests)" >&2
fi
