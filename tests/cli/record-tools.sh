# The tools around the record's own PyTorch script, in what they do without
# torch or a GPU: shell syntax, record-fetch.sh's extraction, record_run.py's
# patches, metadata, argument and data checks, flops.py against spec 12,
# record-data.sh, the table maker, and the short speedrun pipeline on the CPU.
. "$(dirname "$0")/lib.sh"
cd "$T" || exit 1

# ---- syntax ---------------------------------------------------------------
for f in tools/record-fetch.sh tools/record-data.sh tools/record-parity.sh bench/train_gpu.sh \
	bench/inputs.sh bench/step_kernels.sh bench/time-to-loss.sh bench/record_ops.sh bench/speedrun-gpus.sh pipelines/speedrun-short.sh; do
	t_true "bash -n $f" bash -n "$TOP/$f"
done
for f in tools/record_run.py tools/flops.py tools/compare_grads.py bench/record_tables.py; do
	t_true "python3 compiles $f" python3 -c 'import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "exec")' "$TOP/$f"
done

# ---- flops.py: spec 12.3's per-step numbers ---------------------------------
t_run "flops W=1" 0 python3 "$TOP/tools/flops.py" --window 1 --tokens 524288
t_stdout_has '"flops_per_token": 733791744.0'
t_stdout_has '"flops": 384718205878272.0'
t_run "flops W=14" 0 python3 "$TOP/tools/flops.py" --window 14 --tokens 524288
t_stdout_has '"L": 1728.5'
t_stdout_has '"flops": 473160172437504.0'
t_run "flops tile L" 0 python3 "$TOP/tools/flops.py" --window 7 --mode tile
t_stdout_has '"L": 896.0'
t_run "flops MFU" 0 python3 "$TOP/tools/flops.py" --window 7 --tokens 65536 --ms 148.08
t_stdout_has '"mfu": 0.363'
t_run "flops attention only, one layer, forward" 0 python3 "$TOP/tools/flops.py" --L 100 \
	--attention-only --layers-attn 1 --forward-only
t_stdout_has '"flops_per_token": 307200.0'
t_run "flops: no window" 2 python3 "$TOP/tools/flops.py"
t_run "flops: window 0" 2 python3 "$TOP/tools/flops.py" --window 0

# ---- record-fetch.sh on a stand-in log --------------------------------------
# (a few lines with the markers it checks, not the record's code)
cat >script.py <<'EOF'
import os
import sys
with open(sys.argv[0]) as f:
    code = f.read()
import torch
class Muon(torch.optim.Optimizer):
    pass
def norm(x):
    return F.rms_norm(x, (x.size(-1),))
class GPT(nn.Module):
    pass
def _load_data_shard(path):
    pass
class DistributedDataLoader:
    pass

# -----------------------------------------------------------------------------
# int main

print('=' * 100)
EOF
{ cat script.py; echo; printf '=%.0s' $(seq 100); echo; echo 'Running Python 3.12'; echo 'step:1/2 val_loss:1'; } >log.txt
t_run "fetch from a log" 0 "$TOP/tools/record-fetch.sh" -o out/train_gpt.py log.txt
t_true "fetch: the script exactly" cmp out/train_gpt.py script.py
t_stderr_has "wrote out/train_gpt.py \(20 lines, sha256 "
t_stderr_has "warning: not the 2025-01-04 record's script"
t_run "fetch from a plain script" 0 "$TOP/tools/record-fetch.sh" -o out/b.py script.py
t_true "fetch: plain script kept" cmp out/b.py script.py
grep -v '^class GPT' script.py >nogpt.py
t_run "fetch: not the record" 1 "$TOP/tools/record-fetch.sh" -o out/c.py nogpt.py
t_stderr_has "lacks"
t_true "fetch: nothing written on failure" test ! -e out/c.py
echo 'def broken(:' >>script2.py && cat script.py script2.py >bad.py
t_run "fetch: does not compile" 1 "$TOP/tools/record-fetch.sh" -o out/d.py bad.py
t_run "fetch: missing source" 1 "$TOP/tools/record-fetch.sh" -o out/e.py "$T/none.txt"
t_run "fetch: not a modded-nanogpt repository" 1 "$TOP/tools/record-fetch.sh" -o out/f.py "$T"
t_run "fetch: two sources" 2 "$TOP/tools/record-fetch.sh" a b
t_run "fetch: -h" 0 "$TOP/tools/record-fetch.sh" -h
t_stdout_has "^record-fetch.sh - "

# ---- record_run.py: patches -------------------------------------------------
RR=$TOP/tools/record_run.py
t_run "patched" 0 python3 "$RR" --mode patched --record script.py
t_stdout_has '^with open\(__file__\) as f:$'
t_stdout_has 'return F.rms_norm\(x, \(x.size\(-1\),\), eps=0.0078125\)$'
t_true "patched: main part dropped" sh -c "! grep -q 'int main' '$OUT' && ! grep -q \"print('='\" '$OUT'"
t_stderr_has "applied: P1 code-path, P2 stop-main, P3 norm-eps=0.0078125"
t_run "patched: native eps" 0 python3 "$RR" --mode patched --record script.py --norm-eps native
t_stdout_has 'return F.rms_norm\(x, \(x.size\(-1\),\)\)$'
t_run "patched: eps 1e-6" 0 python3 "$RR" --mode patched --record script.py --norm-eps 1e-6
t_stdout_has 'eps=1e-06\)$'
t_run "patched: bad eps" 2 python3 "$RR" --mode patched --record script.py --norm-eps x
sed 's/sys.argv\[0\]/sys.argv[1]/' script.py >p1.py
t_run "patch P1 target missing" 1 python3 "$RR" --mode patched --record p1.py
t_stderr_has "patch P1 code-path: target .* found 0 times"
{ cat script.py; echo '# -----------------------------------------------------------------------------'; echo '# int main'; } >p2.py
t_run "patch P2 ruler twice" 1 python3 "$RR" --mode patched --record p2.py
t_stderr_has "patch P2 stop-main: .* found 2 times"
sed 's/(x.size(-1),))/(x.size(-1),), eps=None)/' script.py >p3.py
t_run "patch P3 target missing" 1 python3 "$RR" --mode patched --record p3.py
t_stderr_has "patch P3 norm-eps"
t_run "patch P3 not needed with native" 0 python3 "$RR" --mode patched --record p3.py --norm-eps native
t_run "patched: no script" 1 python3 "$RR" --mode patched --record none.py
t_stderr_has "record-fetch.sh"
if [ -r "$TOP/.carry/record/train_gpt.py" ]; then
	t_run "patched: the record's own script" 0 python3 "$RR" --mode patched
	t_stderr_has "applied: P1 code-path, P2 stop-main, P3 norm-eps=0.0078125"
	t_true "the record's script: 373 lines above main" test "$(wc -l <"$OUT")" -eq 373
else
	echo "skip: .carry/record/train_gpt.py absent (tools/record-fetch.sh)" >&2
fi

# ---- record_run.py: metadata and weights' headers ---------------------------
t_run "metadata" 0 python3 "$RR" --mode metadata --seed 7
cp "$OUT" meta.json
gpt-init --preset record-2025-01-04 --print-config --json >config.json
t_true "metadata = gpt-init's configuration + init, init_seed" python3 -c '
import json, sys
m = json.load(open("meta.json")); c = json.load(open("config.json"))["config"]
assert m.pop("init") == "record-torch" and m.pop("init_seed") == "7", m
assert m == c, (m, c)'
# header-only safetensors files (no tensors): enough for the checks made before torch
mkhdr() { python3 - "$1" "$2" <<'EOF'
import json, struct, sys
c = json.load(open("config.json"))["config"]
c.update(json.loads(sys.argv[2]))
h = json.dumps({"__metadata__": c}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h)
EOF
}
mkhdr eps3.safetensors '{"norm_eps": "0.001"}'
t_run "eps from the weights' metadata" 0 python3 "$RR" --mode patched --record script.py --init-weights eps3.safetensors
t_stdout_has 'eps=0.001\)$'
t_run "--norm-eps overrides the metadata" 0 python3 "$RR" --mode patched --record script.py --init-weights eps3.safetensors --norm-eps 0.5
t_stdout_has 'eps=0.5\)$'
zstd -q eps3.safetensors -o eps3.safetensors.zst
t_run "compressed weights" 0 python3 "$RR" --mode patched --record script.py --init-weights eps3.safetensors.zst
t_stdout_has 'eps=0.001\)$'
mkhdr l4.safetensors '{"num_layers": "4", "no_attention": ""}'
t_run "not the record's configuration" 1 python3 "$RR" --mode metadata --init-weights l4.safetensors
t_stderr_has "not the record's configuration: num_layers=4 \(record: 12\); no_attention= \(record: 7\)"
mkhdr na.safetensors '{"no_attention": "7,"}'
t_run "no_attention as a list" 0 python3 "$RR" --mode metadata --init-weights na.safetensors
printf 'garbage!' >bad.safetensors
t_run "not safetensors" 1 python3 "$RR" --mode metadata --init-weights bad.safetensors
t_run "missing weights" 1 python3 "$RR" --mode metadata --init-weights none.safetensors

# ---- record_run.py: usage ----------------------------------------------------
t_run "no mode" 2 python3 "$RR"
t_run "steps needs --train-bin" 2 python3 "$RR" --mode steps --steps 3
t_run "steps: windows do not divide" 2 python3 "$RR" --mode steps --train-bin x --steps 10 --fixed-window 1,7,14
t_run "steps: bad window list" 2 python3 "$RR" --mode steps --train-bin x --steps 3 --fixed-window 1,0
t_run "steps: val tokens not whole sequences" 2 python3 "$RR" --mode steps --train-bin x --steps 3 --val-tokens 1000
t_run "seq-len not a multiple of 128" 2 python3 "$RR" --mode grad --tokens x --out y --seq-len 1000
t_run "grad needs --out" 2 python3 "$RR" --mode grad --tokens x
t_run "ops needs --tokens" 2 python3 "$RR" --mode ops
t_run "init needs --save-init" 2 python3 "$RR" --mode init
t_run "--help" 0 python3 "$RR" --help
t_stdout_has "--fixed-window"

# ---- record-data.sh and record_run.py's data checks ------------------------
t_run "record-data" 0 "$TOP/tools/record-data.sh" -B "$GPT_BUILD" -n 20000 d "$TOP/data/sample/train.txt.zst"
t_true "record-data: shards and .bin files" test -s d/train_000000.bin.zst -a -s d/train_000000.bin -a -s d/val.bin.zst -a -s d/val.bin
t_true "record-data: val.bin header" python3 -c '
import struct
h = struct.unpack("<256i", open("d/val.bin", "rb").read(1024))
assert h[:3] == (20240520, 1, 20000) and not any(h[3:]), h[:4]
import os; assert os.path.getsize("d/val.bin") == 1024 + 2 * 20000'
t_true "record-data: same tokens in both forms" sh -c \
	'test "$(gpt-tokshard --stats d/train_000000.bin.zst | sed "s/.*tokens.:\([0-9]*\).*/\1/")" -eq $(( ($(stat -c %s d/train_000000.bin) - 1024) / 2 ))'
t_true "record-data: stats" grep -q '"set":"val".*"tokens":20000' d/stats.jsonl
t_run "record-data again: up to date" 0 "$TOP/tools/record-data.sh" -B "$GPT_BUILD" -n 20000 d "$TOP/data/sample/train.txt.zst"
t_stderr_has "up to date"
t_run "record-data: missing text" 1 "$TOP/tools/record-data.sh" -B "$GPT_BUILD" d2 none.txt
t_run "record-data: usage" 2 "$TOP/tools/record-data.sh" d2
t_run "record-data: bad -n" 2 "$TOP/tools/record-data.sh" -n 1k d2 x
t_run "steps: a step needs more tokens" 1 python3 "$RR" --mode steps --train-bin 'd/train_*.bin' --steps 3
t_stderr_has "479788 tokens; the record's loader needs at least batch \+ 2 = 524290"
t_run "steps: validation would wrap" 1 python3 "$RR" --mode steps --train-bin 'd/train_*.bin' --val-bin d/val.bin \
	--steps 3 --batch-tokens 131072 --val-tokens 65536
t_stderr_has "20000 tokens; 65536 validation tokens need 65538"
t_run "steps: no train files" 1 python3 "$RR" --mode steps --train-bin 'd/none_*.bin' --steps 3
t_run "grad: a shard is not a .bin" 1 python3 "$RR" --mode grad --tokens d/val.bin.zst --out g.safetensors
t_stderr_has "gpt-tokshard --export"

# ---- record_run.py under a launcher (torchrun's variables; checks before torch) --
L2="RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500"
t_run "ranks: only some launcher variables" 1 env -u WORLD_SIZE -u LOCAL_RANK RANK=0 python3 "$RR" --mode steps \
	--train-bin 'd/train_*.bin' --steps 3
t_stderr_has "RANK set but not WORLD_SIZE, LOCAL_RANK"
t_run "ranks: RANK out of range" 1 env RANK=2 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=x MASTER_PORT=1 python3 "$RR" \
	--mode steps --train-bin 'd/train_*.bin' --steps 3
t_stderr_has "need 0 <= RANK < WORLD_SIZE"
t_run "ranks: not an integer" 1 env RANK=a WORLD_SIZE=2 LOCAL_RANK=0 python3 "$RR" --mode steps \
	--train-bin 'd/train_*.bin' --steps 3
t_run "ranks: no rendezvous address" 1 env -u MASTER_ADDR -u MASTER_PORT RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 \
	python3 "$RR" --mode steps --train-bin 'd/train_*.bin' --steps 3
t_stderr_has "without MASTER_ADDR and MASTER_PORT"
t_run "ranks: grad is one GPU only" 1 env $L2 python3 "$RR" --mode grad --tokens d/val.bin --out g.safetensors
t_stderr_has "only --mode steps runs on several ranks"
t_run "ranks: validation not whole per-rank batches" 1 env $L2 python3 "$RR" --mode steps --train-bin 'd/train_*.bin' \
	--val-bin d/val.bin --steps 3 --val-tokens 65536
t_stderr_has "rank 1: --val-tokens 65536 is not a multiple of ranks x --seq-len = 131072"
t_run "ranks: a rank's share not whole micro-batches" 1 env $L2 python3 "$RR" --mode steps --train-bin 'd/train_*.bin' \
	--steps 3 --batch-tokens 196608
t_stderr_has "each rank's share must be at most --seq-len 65536 or a multiple of it"
t_run "ranks: the data checks still run" 1 env $L2 python3 "$RR" --mode steps --train-bin 'd/train_*.bin' --steps 3
t_stderr_has "rank 1: d/train_000000.bin: 479788 tokens"
t_run "ranks: one rank under a launcher" 1 env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 python3 "$RR" --mode steps \
	--train-bin 'd/train_*.bin' --steps 3
t_stderr_has "^record_run.py: d/train_000000.bin: 479788 tokens"

# ---- tables ------------------------------------------------------------------
python3 - <<'EOF'
import json
with open("g.jsonl", "w") as f:
    s = 0
    for w in (1, 7, 14):
        for k in range(5):
            f.write(json.dumps({"type": "train", "step": s, "loss": 5.0, "window": w, "tokens": 524288,
                                "step_ms": 1000.0 + w + (5000 if k == 0 else 0),
                                "ms": {"data": 1.0, "fwd_bwd": 900.0, "optim": 50.0 + w}}) + "\n")
            s += 1
    f.write(json.dumps({"type": "end", "peak_bytes": 2e10, "device": "cuda"}) + "\n")
with open("t.jsonl", "w") as f:
    for w in (1, 7, 14):
        f.write(json.dumps({"type": "segment", "window": w, "steps": 5, "median_step_ms": 2000.0 + w,
                            "peak_bytes": 3.18e10, "peak_reserved_bytes": 3.6e10}) + "\n")
with open("c.jsonl", "w") as f:
    for s in range(301):
        if s % 50 == 0:
            f.write(json.dumps({"type": "val", "step": s, "val_loss": 4.0 + s / 1000, "train_time_ms": 1000.0 * s}) + "\n")
        if s < 300:
            f.write(json.dumps({"type": "train", "step": s, "step_ms": 1000.0}) + "\n")
EOF
t_run "table train-gpu" 0 python3 "$TOP/bench/record_tables.py" train-gpu g.jsonl t.jsonl --skip 2
t_stdout_has '^\| 7 \| 811.6M \| 1007.0 \| 2007.0 \| 0.502 \| 520,643 \| 261,230 \| 42.7% \| 21.4% \| 20.00 \| 31.80 \(36.00\) \|$'
t_stdout_has 'W=14: data 1.0, fwd\+bwd 900.0, optim 64.0'
t_run "table train-gpu, one side" 0 python3 "$TOP/bench/record_tables.py" train-gpu g.jsonl none.jsonl
t_stdout_has '^\| 1 \| 733.8M \| 1001.0 \| - \| - \|'
# nvidia-smi's samples (train_gpu.sh: timestamp, SM MHz, W, limit W, reasons):
# idle ones (under 40% of the limit) left out, a bad line skipped
cat >g.smi.csv <<'EOF'
2026/11/29 10:17:20.099, 345, 79.65, 700.00, 0x0000000000000001
2026/11/29 10:17:20.199, 1560, 691.2, 700.00, 0x0000000000000004
2026/11/29 10:17:20.299, 1410, 698.0, 700.00, 0x0000000000000004
2026/11/29 10:17:20.399, 1980, 420.0, 700.00, 0x0000000000000000
2026/11/29 10:17:20.499, [N/A], [N/A], 700.00, [N/A]
EOF
printf '2026/11/29 10:18:00.000, 1700, 650.0, 700.00, 0x0000000000000008\n' >t.smi.csv
t_run "table train-gpu, GPU samples" 0 python3 "$TOP/bench/record_tables.py" train-gpu g.jsonl t.jsonl \
	--smi g.smi.csv t.smi.csv
t_stdout_has '^GPU while gpt-train ran \(3 of 4 samples at work, every 100 ms\): SM clock median 1560 MHz \(1410-1980\), power median 691 W of 700 W; power cap holding the clock in 67% of them\.$'
t_stdout_has '^GPU while PyTorch ran .*SM clock median 1700 MHz.*in 0% of them, a hardware slowdown in 100%\.$'
t_run "table train-gpu, no GPU samples" 0 python3 "$TOP/bench/record_tables.py" train-gpu g.jsonl t.jsonl \
	--smi none.csv none.csv
t_true "table train-gpu, no GPU samples: no GPU line" sh -c "! grep -q '^GPU while' '$OUT'"
# Nsight Compute's CSV (bench/step_kernels.sh): one micro-batch from the first
# rmsnorm_fwd_kernel launch to the next, per kernel name, mixed units
python3 - <<'EOF'
rows = [(0, "k_init(float *)", 5000, "ns", 1000, "byte"),
        (1, "void rmsnorm_fwd_kernel<3>(unsigned short *, int)", 20, "us", 100, "Mbyte"),
        (2, "void foo<1, (int)2>(float *, int)", 0.1, "ms", 0.2, "Gbyte"),
        (3, "void foo<1, (int)2>(float *, int)", 300000, "ns", 600, "MB"),
        (4, "nvjet_sm90_tst_128x160(int)", 80, "usecond", 0, "byte"),
        (5, "void rmsnorm_fwd_kernel<3>(unsigned short *, int)", 20, "us", 100, "Mbyte")]
with open("ncu.csv", "w") as f:
    f.write("==PROF== Connected to process 1 (gpt-train)\n")
    f.write('"ID","Process ID","Kernel Name","Metric Name","Metric Unit","Metric Value"\n')
    for i, n, t, tu, b, bu in rows:
        f.write(f'"{i}","1","{n}","dram__bytes_read.sum","{bu}","{b:,}"\n')
        f.write(f'"{i}","1","{n}","dram__bytes_write.sum","byte","0"\n')
        f.write(f'"{i}","1","{n}","gpu__time_duration.sum","{tu}","{t:,}"\n')
EOF
t_run "table kernels" 0 python3 "$TOP/bench/record_tables.py" kernels ncu.csv --micro 2
t_stdout_has '^4 launches in one micro-batch \(launches 1..4 of 6\), each timed alone: 0.50 ms, x 2 = 1.0 ms per step\.$'
t_stdout_has '^\| `foo<1, \(int\)2>` \| 2 \| 200.0 \| 0.400 \| 0.8 \| 80.0% \| 2.00 \|$'
t_stdout_has '^\| `rmsnorm_fwd_kernel<3>` \| 1 \| 20.0 \| 0.020 \| 0.0 \| 4.0% \| 5.00 \|$'
t_run "table kernels: no whole micro-batch" 1 python3 "$TOP/bench/record_tables.py" kernels ncu.csv --start foo2
t_stderr_has "0 matching 'foo2': no whole micro-batch"
t_run "table kernels: no file" 1 python3 "$TOP/bench/record_tables.py" kernels none.csv
t_run "table time-to-loss" 0 "$TOP/bench/time-to-loss.sh" --table .
t_run "table time-to-loss, logs" 0 python3 "$TOP/bench/record_tables.py" time-to-loss c.jsonl c.jsonl --reference
t_stdout_has '^\| 300 \| 4.3000 \| 4.3000 \| 3.5532 \| \+0.0000 \|$'
t_stdout_has '^\| PyTorch reference .* \| 300 \| - \| 312.9 \(the record.s clock, as reported\) \|'
t_stdout_has '^gpt-train / PyTorch, training time from step 10: 1.000$'
t_stdout_has '^gpt-train / the reference, training time from step 10: 0.927$'
t_stdout_has '^\| gpt-train \| 300 \| 300.0 \| 290.0 \| 1000.0 \| 1.0, 1.0, 1.0 \|$'
t_run "table curve" 0 python3 "$TOP/bench/record_tables.py" curve c.jsonl
t_stdout_has '^\| 250 \| 4.2500 \| 250.0 \|$'
t_run "table curve: no log" 1 python3 "$TOP/bench/record_tables.py" curve none.jsonl
cat >ops.jsonl <<'EOF'
{"type": "op", "op": "model_fwd_bwd", "window": 7, "tokens": 65536, "ms": 120.5, "ms_min": 119.0, "peak_bytes": 2.5e10, "peak_reserved_bytes": 3e10, "L_mask": 812.25, "L_tile": 896.0, "tflops": 400.1, "mfu": 0.404}
{"type": "op", "op": "flex_fwd", "window": 7, "tokens": 65536, "ms": 0.5, "ms_min": 0.4, "peak_bytes": 2.5e10, "peak_reserved_bytes": 3e10, "L_mask": 812.25, "L_tile": 896.0, "tflops": 30.1, "mfu": 0.03, "tflops_tile": 60.2}
EOF
t_run "table ops" 0 python3 "$TOP/bench/record_tables.py" ops ops.jsonl
t_stdout_has '^\| 7 \| flex_fwd \| 0.50 \| 0.40 \| 30.1 \| 60.2 \| 3.0% \| 812.2 / 896.0 \| 25.00 \(30.00\) \|$'
t_run "table ops: none" 1 python3 "$TOP/bench/record_tables.py" ops g.jsonl
python3 - <<'EOF'
import json, os
# 40 steps of a schedule with windows 1 (steps 0-19), 7 (20-29), 14 (30-39); val every 20
def log(path, base, end):
    with open(path, "w") as f:
        for s in range(41):
            if s % 20 == 0:
                f.write(json.dumps({"type": "val", "step": s, "val_loss": 5.0 - s / 100 - base / 1e4,
                                    "train_time_ms": 100.0 * s}) + "\n")
            if s < 40:
                w = 1 if s < 20 else 7 if s < 30 else 14
                f.write(json.dumps({"type": "train", "step": s, "window": w,
                                    "step_ms": base + w + (9000 if s < 3 else 0)}) + "\n")
        f.write(json.dumps(end) + "\n")
os.makedirs("sg", exist_ok=True)
log("sg/gpt.jsonl", 100.0, {"type": "end", "peak_bytes": 2.5e10, "device": "cuda", "world": 8})
log("sg/torch.jsonl", 200.0, {"type": "end", "world_size": 8, "peak_bytes_per_rank": [3e10, 3.1e10],
                              "peak_reserved_bytes_per_rank": [3.5e10, 3.6e10], "record_time_ms": 6000.0})
EOF
echo 8 >sg/gpus
mkdir -p one && cp g.jsonl one/gpt.jsonl && cp t.jsonl one/torch.jsonl
t_run "table gpus" 0 python3 "$TOP/bench/record_tables.py" gpus sg/gpt.jsonl sg/torch.jsonl --gpus 8 --one-gpu one
t_stdout_has '^\| 1 \| 10 / 10 \| 101.0 \| 201.0 \| 0.502 \| 1001.0 \| 2001.0 \| 123.9% \| 124.4% \|$'
t_stdout_has '^\| 14 \| 10 / 10 \| 114.0 \| 214.0 \| 0.533 \| 1014.0 \| 2014.0 \| 111.2% \| 117.6% \|$'
t_stdout_has '^\| PyTorch \(record code\) \| 40 \| 6.2 \| 35.2 \| 6.0 \| 9.2, 9.2, 9.2 \| 31.00 \(max of 2 ranks; reserved 36.00\) \|$'
t_stdout_has '^\| 40 \| 4.5900 \| 4.5800 \| \+0.0100 \| 4.0 \| 4.0 \|$'
t_run "table gpus: other world size" 0 python3 "$TOP/bench/record_tables.py" gpus sg/gpt.jsonl none.jsonl --gpus 4
t_stdout_has "warning: gpt-train's log ran on 8 rank\(s\), not 4"
t_run "table gpus: no logs" 1 python3 "$TOP/bench/record_tables.py" gpus none.jsonl none2.jsonl --gpus 8
t_run "table gpus: --gpus 0" 2 python3 "$TOP/bench/record_tables.py" gpus sg/gpt.jsonl sg/torch.jsonl --gpus 0
t_run "speedrun-gpus --table" 0 "$TOP/bench/speedrun-gpus.sh" --table sg
t_stdout_has '^8 GPU\(s\)'
t_run "speedrun-gpus -h" 0 "$TOP/bench/speedrun-gpus.sh" -h
t_stdout_has "^speedrun-gpus.sh - "
t_run "speedrun-gpus: usage" 2 "$TOP/bench/speedrun-gpus.sh"
t_run "speedrun-gpus: no build directory" 2 "$TOP/bench/speedrun-gpus.sh" "$T/none"
t_run "speedrun-gpus: bad STEPS" 2 env STEPS=1k "$TOP/bench/speedrun-gpus.sh" "$GPT_BUILD"
t_run "speedrun-gpus: bad WHICH" 2 env WHICH=x "$TOP/bench/speedrun-gpus.sh" "$GPT_BUILD"
t_run "speedrun-gpus: GPUS not dividing 8" 2 env GPUS=3 CUDA_VISIBLE_DEVICES=0,1,2 "$TOP/bench/speedrun-gpus.sh" "$GPT_BUILD" sgr
t_stderr_has "needs G dividing 8"
t_run "speedrun-gpus: too few GPUs" 1 env GPUS=4 CUDA_VISIBLE_DEVICES=0,1 "$TOP/bench/speedrun-gpus.sh" "$GPT_BUILD" sgr
t_run "speedrun-gpus: VAL_TOKENS" 2 env GPUS=8 VAL_TOKENS=1179648 CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 \
	"$TOP/bench/speedrun-gpus.sh" "$GPT_BUILD" sgr
t_stderr_has "not a multiple of 8 x 65536"

# ---- the short speedrun, tiny, on the CPU -------------------------------------
gpt-init -q --preset tiny --layers 2 --dim 64 --heads 1 --value-embeds 1 --no-attn none -o tiny.safetensors
t_run "speedrun-short (tiny, CPU, 2 steps)" 0 env DEVICE=cpu INIT="$T/tiny.safetensors" BATCH_TOKENS=1024 \
	SEQ_LEN=512 VAL_TOKENS=1024 STEPS=2 EVAL_EVERY=1 TRAIN_TEXT="$TOP/data/sample/train.txt.zst" \
	VAL_TEXT="$TOP/data/sample/val.txt.zst" GPT_THREADS=2 "$TOP/pipelines/speedrun-short.sh" run
t_stdout_has '^\| 2 \| [0-9.]+ \| [0-9.]+ \|$'
t_true "speedrun-short: the schedule" grep -qx '1 1 0.8503333333333333 7 1 0 1' run/schedule.txt
t_true "speedrun-short: end record" grep -q '"type":"end","steps":2' run/train.jsonl
t_run "speedrun-short: too little text for a step" 1 env DEVICE=cpu INIT="$T/tiny.safetensors" \
	VAL_TOKENS=1024 TRAIN_TEXT="$TOP/data/sample/train.txt.zst" VAL_TEXT="$TOP/data/sample/val.txt.zst" \
	"$TOP/pipelines/speedrun-short.sh" run2
t_stderr_has "a step needs 524290"

# ---- speedrun-gpus.sh's gpt-* side, tiny, on the CPU (one "GPU", no nvidia-smi) --
t_run "speedrun-gpus (tiny, CPU, gpt-* side)" 0 env DEVICE=cpu GPT_THREADS=2 INIT="$T/tiny.safetensors" \
	BATCH_TOKENS=1024 SEQ_LEN=512 GPUS=1 CUDA_VISIBLE_DEVICES=0 WHICH=gpt STEPS=2 EVAL_EVERY=1 VAL_TOKENS=1024 \
	SCRATCH="$T/sgs" TRAIN_TEXT="$TOP/data/sample/train.txt.zst" VAL_TEXT="$TOP/data/sample/val.txt.zst" \
	"$TOP/bench/speedrun-gpus.sh" "$GPT_BUILD" sgres
t_stdout_has '^\| 2 \| [0-9.]+ \| - \| - \| [0-9.]+ \| - \|$'
t_stdout_has '^\| gpt-train \| 2 \| '
t_true "speedrun-gpus: gpt-* read the very tokens the record's loader reads" \
	cmp sgres/gpt/data/fineweb_val_000000.bin.zst sgs/data/val.bin.zst
t_true "speedrun-gpus: train shard too" cmp sgres/gpt/data/fineweb_train_000001.bin.zst sgs/data/train_000000.bin.zst
t_true "speedrun-gpus: the log kept" grep -q '"type":"end","steps":2' sgres/gpt.jsonl
