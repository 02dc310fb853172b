#!/usr/bin/env bash
# gpt-init: conventions, the parameter table, writing weights, outputs.
. "$(dirname "$0")/lib.sh"

t_conventions gpt-init

# ---- the record's parameter table (spec 3.2) ---------------------------------
t_run "print-config record" 0 gpt-init --print-config --preset record-2025-01-04
t_stdout_has "^total: 97 tensors, 275,742,772 parameters$"
t_stdout_has "^embed.weight +\[50304, 768\] +BF16 +38,633,472 +embed +N\(0,1\)$"
t_stdout_has "^blocks.0.attn.c_q.weight +\[768, 768\] +F32 +589,824 +muon +U\(\+-0.0360844\)$"
t_stdout_has "^lm_head.weight +\[50304, 768\] +F32 +38,633,472 +head +zeros$"
t_stdout_has "^blocks.7.lambdas +\[2\] +F32 +2 +scalar +\[1,0\]$"
t_stdout_has "^  no_attention +7$"
if grep -q "blocks.7.attn" "$OUT"; then t_fail "print-config: block 7 has no attention"; else t_ok "print-config: block 7 has no attention"; fi
n=$(grep -cE "^(skip_weights|embed|blocks|value_embeds|lm_head)" "$OUT")
[ "$n" = 97 ] && t_ok "print-config lists 97 tensors" || t_fail "print-config lists 97 tensors" "got $n"
t_stdout_has "^file: 793,912,960 bytes"
t_run "print-config default is the record" 0 gpt-init --print-config
t_stdout_has "^total: 97 tensors, 275,742,772 parameters$"
t_run "print-config json" 0 gpt-init --print-config --json
t_stdout_has '"total_tensors":97,"total_params":275742772,'
t_stdout_has '^\{"name":"embed.weight","shape":\[50304,768\],"dtype":"BF16","count":38633472,"group":"embed","init":"N\(0,1\)","offset":6\},$'
t_stdout_has '"groups":\{"embed":154533888,"head":38633472,"scalar":52,"muon":82575360\}'
t_run "print-config json f32" 0 gpt-init --json --dtype f32
t_stdout_has '"dtype":"f32","file_bytes":1102'
t_run "print-config tiny" 0 gpt-init --print-config --preset tiny
t_stdout_has "^total: 36 tensors, 20,103,186 parameters$"
t_stdout_has "^blocks.0.attn.c_q.weight +\[128, 128\] +F32 +16,384 +muon +U\(\+-0.0883883\)$"

# ---- writing -----------------------------------------------------------------
t_run "write tiny" 0 gpt-init --preset tiny -o "$T/tiny.safetensors"
t_stderr_empty
size=$(gpt-init --print-config --preset tiny | sed -n 's/^file: \([0-9,]*\) bytes.*/\1/p' | tr -d ,)
got=$(wc -c <"$T/tiny.safetensors")
[ "$got" = "$size" ] && t_ok "tiny: size as printed ($size)" || t_fail "tiny: size as printed" "$got != $size"
hdr=$(head -c 4096 "$T/tiny.safetensors" | tr -d '\000' | tr -c '[:print:]' '?')
case $hdr in *'"__metadata__":{"format":"gpt-weights/1","vocab_size":"50304","num_layers":"4"'*'"init":"gpt-init/1","init_seed":"0"}'*) t_ok "tiny: metadata" ;; *) t_fail "tiny: metadata" "${hdr:0:300}" ;; esac
case $hdr in *'"embed.weight":{"dtype":"BF16","shape":[50304,128],"data_offsets":[8,12877832]}'*) t_ok "tiny: embed entry" ;; *) t_fail "tiny: embed entry" "${hdr:0:400}" ;; esac
ls -a "$T" | grep -q '^\.tiny' && t_fail "tiny: no temporary left" || t_ok "tiny: no temporary left"

t_run "write tiny again" 0 gpt-init --preset tiny -o "$T/tiny2.safetensors"
t_true "same seed, same bytes" cmp "$T/tiny.safetensors" "$T/tiny2.safetensors"
t_run "write tiny seed 1" 0 gpt-init --preset tiny --seed 1 -o "$T/tiny-s1.safetensors"
if cmp -s "$T/tiny.safetensors" "$T/tiny-s1.safetensors"; then t_fail "another seed, other bytes"; else t_ok "another seed, other bytes"; fi
GPT_THREADS=1 gpt-init --preset tiny -o "$T/t1.safetensors"
GPT_THREADS=3 gpt-init --preset tiny -o "$T/t3.safetensors"
gpt-init --preset tiny --threads 2 -o "$T/t2.safetensors"
t_true "1 thread = 3 threads" cmp "$T/tiny.safetensors" "$T/t1.safetensors"
t_true "3 threads = default" cmp "$T/tiny.safetensors" "$T/t3.safetensors"
t_true "--threads 2 = default" cmp "$T/tiny.safetensors" "$T/t2.safetensors"

# pinned bytes: the first values of embed.weight for seed 0 (bf16 -0.0105591, 1.5078125)
first=$(od -A n -t x1 -j $((8 + $(od -A n -t u8 -N 8 "$T/tiny.safetensors") + 8)) -N 4 "$T/tiny.safetensors" | tr -d ' ')
[ "$first" = "2dbcc13f" ] && t_ok "seed 0: embed.weight[0..1]" || t_fail "seed 0: embed.weight[0..1]" "got $first"

# standard output to a pipe, the same bytes
gpt-init --preset tiny | cat >"$T/piped.safetensors"
t_true "stdout through a pipe" cmp "$T/tiny.safetensors" "$T/piped.safetensors"
t_run "-o - is stdout" 0 gpt-init --preset tiny -o -
t_true "-o - bytes" cmp "$T/tiny.safetensors" "$OUT"

# f32
t_run "write tiny f32" 0 gpt-init --preset tiny --dtype f32 -o "$T/f32.safetensors"
size=$(gpt-init --print-config --preset tiny --dtype f32 | sed -n 's/^file: \([0-9,]*\) bytes.*/\1/p' | tr -d ,)
[ "$(wc -c <"$T/f32.safetensors")" = "$size" ] && t_ok "f32: size as printed" || t_fail "f32: size as printed"
head -c 2000 "$T/f32.safetensors" | grep -q BF16 && t_fail "f32: no BF16 tensor" || t_ok "f32: no BF16 tensor"

# compressed
t_run "write tiny .zst" 0 gpt-init --preset tiny -o "$T/tiny.safetensors.zst"
if command -v zstd >/dev/null; then
	zstd -q -dc "$T/tiny.safetensors.zst" >"$T/unz.safetensors"
	t_true ".zst decompresses to the same bytes" cmp "$T/tiny.safetensors" "$T/unz.safetensors"
	t_true ".zst has a checksum" sh -c "zstd -lv '$T/tiny.safetensors.zst' 2>&1 | grep -q 'Check: XXH64'"
fi

# a mid-size configuration (the record's 795 MB takes too long for the suite)
t_run "write mid-size" 0 gpt-init --layers 2 --no-attn none --value-embeds 1 --vocab 8192 --eot 8191 -o "$T/mid.safetensors"
size=$(gpt-init --print-config --layers 2 --no-attn none --value-embeds 1 --vocab 8192 --eot 8191 | sed -n 's/^file: \([0-9,]*\) bytes.*/\1/p' | tr -d ,)
[ "$(wc -c <"$T/mid.safetensors")" = "$size" ] && t_ok "mid-size: size as printed ($size)" || t_fail "mid-size: size as printed"

# ---- refusals and failures ---------------------------------------------------
if command -v script >/dev/null; then
	script -qec "gpt-init --preset tiny" /dev/null >"$T/tty.out" 2>&1
	rc=$?
	[ $rc = 2 ] && t_ok "terminal refused (exit 2)" || t_fail "terminal refused (exit 2)" "rc $rc"
	grep -q "gpt-init: refusing to write binary data to a terminal" "$T/tty.out" && t_ok "terminal refused: message" || t_fail "terminal refused: message" "$(head -c 300 "$T/tty.out")"
	script -qec "gpt-init --preset tiny --layers 2 --value-embeds 0 --vocab 64 --eot 0 --force | wc -c" /dev/null >"$T/tty.out" 2>&1
	grep -q '^[0-9]' "$T/tty.out" && t_ok "--force writes to a terminal" || t_fail "--force writes to a terminal" "$(head -c 300 "$T/tty.out")"
else
	echo "skip: script(1) not found, terminal refusal not tested" >&2
fi

t_run "stdout to /dev/full" 1 sh -c 'gpt-init --preset tiny >/dev/full'
t_stderr_has "^gpt-init: standard output: write failed: No space left on device"

t_run "missing output directory" 1 gpt-init --preset tiny -o "$T/missing/w.safetensors"
t_stderr_has "^gpt-init: $T/missing/w.safetensors: cannot create temporary file"

# a write that fails midway (file-size limit; SIGXFSZ ignored so write() fails):
# nothing under the final name, no temporary, an older file left alone
mkdir "$T/lim"
echo "old weights" >"$T/lim/w.safetensors"
t_run "write fails midway" 1 bash -c "ulimit -f 1000; trap '' XFSZ; exec gpt-init --preset tiny -o '$T/lim/w.safetensors'"
t_stderr_has "^gpt-init: $T/lim/w.safetensors: write failed: File too large"
[ "$(cat "$T/lim/w.safetensors")" = "old weights" ] && t_ok "failed write: old file intact" || t_fail "failed write: old file intact"
[ "$(ls -A "$T/lim")" = "w.safetensors" ] && t_ok "failed write: no temporary left" || t_fail "failed write: no temporary left" "$(ls -A "$T/lim")"
t_run "write fails midway (.zst)" 1 bash -c "ulimit -f 100; trap '' XFSZ; exec gpt-init --preset tiny -o '$T/lim/w.safetensors.zst'"
[ "$(ls -A "$T/lim")" = "w.safetensors" ] && t_ok "failed .zst write: nothing left" || t_fail "failed .zst write: nothing left" "$(ls -A "$T/lim")"

# interrupted: SIGTERM while the temporary file is being written leaves
# nothing (we wait for the temporary to appear: gpt-init is running by then)
mkdir "$T/int"
gpt-init --layers 2 --no-attn none --value-embeds 1 -o "$T/int/w.safetensors" &
pid=$!
for _ in $(seq 500); do
	ls -A "$T/int" | grep -q . && break
	sleep 0.01
done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
if [ -e "$T/int/w.safetensors" ]; then
	echo "skip: gpt-init finished before SIGTERM" >&2
else
	[ $rc = 143 ] && t_ok "SIGTERM: killed by the signal" || t_fail "SIGTERM: killed by the signal" "rc $rc"
	[ -z "$(ls -A "$T/int")" ] && t_ok "SIGTERM: no temporary left" || t_fail "SIGTERM: no temporary left" "$(ls -A "$T/int")"
fi

# usage errors
t_run "unknown preset" 2 gpt-init --preset huge --print-config
t_stderr_has "unknown preset 'huge'"
t_run "odd layers" 2 gpt-init --layers 3 --print-config
t_stderr_has "bad model configuration: layers 3: must be even"
t_run "dim not a multiple of heads" 2 gpt-init --dim 100 --heads 3 --print-config
t_stderr_has "dim 100 is not a multiple of heads 3"
t_run "no-attn beyond the layers" 2 gpt-init --layers 4 --value-embeds 1 --print-config
t_stderr_has "no-attention layer index beyond the 4 layers"
t_run "bad no-attn list" 2 gpt-init --no-attn 1,x --print-config
t_stderr_has "--no-attn: 'x' is not an integer"
t_run "bad dtype" 2 gpt-init --dtype f16 --print-config
t_stderr_has "--dtype: 'f16' is not record or f32"
t_run "bad seed" 2 gpt-init --seed -1 --print-config
t_run "print-config with -o" 2 gpt-init --print-config -o "$T/x"
t_run "positional argument" 2 gpt-init --preset tiny out.safetensors
t_stderr_has "unexpected argument 'out.safetensors'"
[ ! -e "$T/x" ] && t_ok "usage errors write nothing" || t_fail "usage errors write nothing"

# explicit sizes: --dim implies mlp 4 x dim and head_dim / 4 rotary frequencies
t_run "explicit sizes" 0 gpt-init --preset tiny --dim 256 --heads 4 --print-config
t_stdout_has "^  mlp_hidden +1024$"
t_stdout_has "^  rope_freqs +16$"
t_stdout_has "^blocks.0.mlp.c_fc.weight +\[1024, 256\]"

# the JSON form is valid JSON and agrees with the table
if command -v jq >/dev/null; then
	gpt-init --print-config --json >"$T/rec.json"
	t_true "json: parses, 97 tensors, 275742772 parameters" jq -e '(.tensors | length) == 97 and ([.tensors[].count] | add) == 275742772 and .total_params == 275742772' "$T/rec.json"
	t_true "json: offsets contiguous" jq -e '[.tensors[] | .offset] as $o | [.tensors[] | .count] as $c | all(range(1; $o | length); $o[.] == $o[. - 1] + $c[. - 1])' "$T/rec.json"
	t_true "json: config is the metadata" jq -e '.config.format == "gpt-weights/1" and .config.no_attention == "7" and .config.num_heads == "6"' "$T/rec.json"
else
	echo "skip: jq not found, JSON output not parsed" >&2
fi
