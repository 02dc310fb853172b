#!/usr/bin/env python3
"""record_run.py - run the NanoGPT speedrun record's own PyTorch code on one GPU,
as an outside reference for gpt-*: training steps, one gradient, per-op timings.

The record's script (KellerJordan/modded-nanogpt, records/track_1_short/
2025-01-04_SoftCap) is not part of this repository: tools/record-fetch.sh puts it
in .carry/record/train_gpt.py. This tool reads that file, applies the small
string patches listed below in memory (each must match exactly once, or the tool
stops), and exec's everything above the script's "# int main" line: its Muon,
its model (GPT, Block, CausalSelfAttention with FlexAttention, the block mask),
its data loader. What the script's main part did (process group, model set-up,
optimizers, schedules, training loop, validation, clock) is done by this driver,
step for step as the record does it (L377-558), with the step count, window,
data and output made options. Nothing of the record's model or optimizer code is
rewritten here.

Modes
  steps    train as the record does on one GPU (spec 8: 8 micro-batches of
           65,536 tokens per step, gradients summed; DDP with one rank; Adam +
           Muon with the record's groups and rates), with the record's schedules
           compressed to --steps N (lr stable for 60% then linear decay;
           window int(((1-x)*128 + x*1856)//128) with x = step/N; Muon momentum
           0.85 -> 0.95 over the first 300 steps), validation every --val-every
           steps and at N on the first --val-tokens tokens of --val-bin.
           --fixed-window W holds the window at W (timing); W1,W2,... cuts the
           run into equal parts, one per window, so that one process (one
           compilation) times several windows.
           Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) it runs on P ranks
           as the record does on 8: each rank takes its 1/P share of each
           batch (the record's loader), 8/P micro-batches of 65,536 tokens,
           backward per micro-batch with DDP all-reducing each one (no
           no_sync, as the record); validation: val_tokens/(P*65,536) batches
           per rank, all_reduce(AVG). P must divide 8 (--batch-tokens /
           --seq-len). Only rank 0 writes JSON and progress.
  grad     one forward + backward of the compiled model on the first T tokens
           of --tokens (T+1 read), in the record's precisions (its bf16
           embeddings, CastedLinear, bf16 activations, fp32 loss); writes the loss
           and every parameter's gradient (F32, the record's state-dict names, as
           gpt-eval --grad-out does) for tools/compare_grads.py.
  ops      per-operation timings at T tokens for each --windows value: the model's
           forward+backward, its no-grad forward (validation), one Adam + Muon
           step, and FlexAttention's forward and forward+backward alone with the
           record's block mask; TFLOP/s by spec 12 (tools/flops.py), peak memory.
  init     only write --save-init.
  patched  print the patched source (needs no torch), to check the patches.
  metadata print the gpt-weights(5) metadata --save-init writes (needs no torch).

    python3 tools/record_run.py --mode steps --train-bin 'd/train_*.bin' \\
        --val-bin d/val.bin --steps 300 --val-every 50 --val-tokens 1179648 \\
        --init-weights init.safetensors > torch.jsonl
    python3 tools/record_run.py --mode steps --train-bin 'd/train_*.bin' --steps 30 \\
        --fixed-window 1,7,14 --val-tokens 0 > timing.jsonl
    python3 tools/record_run.py --mode grad --tokens d/val.bin --seq-len 65536 \\
        --window 14 --init-weights w.safetensors --out ref_grads.safetensors
    python3 tools/record_run.py --mode ops --tokens d/val.bin > ops.jsonl

Weights: --init-weights FILE loads a gpt-weights(5) file (gpt-init's, a gpt-train
checkpoint's model tensors; .zst is decompressed with zstd): names are the record's
own state-dict names (prefixes _orig_mod. and module. are removed), every tensor is
required with its shape, and values are converted to the record's dtypes (BF16
embeddings, F32 others; an F32 embedding that is not bf16-exact is reported). The
configuration in its metadata must be the record's. --save-init FILE writes the
record model's own initial weights (PyTorch's default init after
torch.manual_seed(--seed); the record sets no seed) as a gpt-weights(5) file that
gpt-train and gpt-eval read.

Patches (applied to the script's text in memory):
  P1 code-path   'with open(sys.argv[0]) as f:' -> 'with open(__file__) as f:'.
                 The script reads its own source for its log through sys.argv[0],
                 which is this driver; __file__ is set to the script's path.
  P2 stop-main   the text from the ruler above '# int main' to the end is dropped:
                 hyperparameters, DDP set-up, logging and the training loop are
                 this driver's (same statements, made configurable).
  P3 norm-eps    'return F.rms_norm(x, (x.size(-1),))' gets ', eps=E' (unless
                 --norm-eps native). The record ran PyTorch 2.6.0.dev20241231,
                 whose rms_norm without eps used the bf16 epsilon 2^-7 for bf16
                 inputs (spec 4.1); later PyTorch uses 2^-23. E defaults to the
                 --init-weights metadata's norm_eps (gpt-*'s own), else 2^-7.
  G1 rank        the global 'rank' (set in the dropped main part, read by
                 Muon.step) is defined as this process's RANK (0 on one GPU).
Environment: NCCL_NVLS_ENABLE=0 always. With none of RANK, WORLD_SIZE,
LOCAL_RANK set: RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1, MASTER_PORT
a free port. With all three set (torchrun): they are used, the GPU is LOCAL_RANK
(torch.cuda.set_device, DDP device_ids), and modes other than steps refuse
WORLD_SIZE > 1; with only some set the tool stops.

    torchrun --standalone --nproc_per_node=8 tools/record_run.py --mode steps \
        --train-bin 'd/train_*.bin' --val-bin d/val.bin --steps 1390 \
        --val-every 125 --init-weights init.safetensors > torch8.jsonl

Output: JSON lines on stdout, flushed per record (non-finite numbers as null);
progress on stderr (not with --quiet).
  steps: {"type":"train","step","loss","lr_scale","momentum","window","tokens",
           "step_ms","tokens_per_s","train_time_ms","record_time_ms"}
           (loss: mean over micro-batches, on P ranks all_reduce(AVG)'d after
           step_ms is taken; rank 0's step_ms and clocks)
         {"type":"val","step","val_loss","val_tokens","window","ms",
           "train_time_ms","record_time_ms"}
         {"type":"segment","window","first_step","steps","median_step_ms",
           "tokens_per_s","tflops","mfu","peak_bytes","peak_reserved_bytes"}
         {"type":"end","steps","world_size","peak_bytes_per_rank",
           "peak_reserved_bytes_per_rank","train_time_ms","record_time_ms","first_steps_ms",
           "median_step_ms","val_loss","peak_bytes","peak_reserved_bytes",
           "device","torch","norm_eps"}
  grad:  {"type":"grad","loss","tokens","window","ms"}
  ops:   {"type":"op","op","window","tokens","ms","ms_min","repeat","first_ms",
           "peak_bytes","peak_reserved_bytes","L_mask","L_tile","tflops",
           "tflops_tile","mfu"}
Timing (spec 11): step_ms is one step's wall time ending with
torch.cuda.synchronize() (--no-step-sync: no synchronisation, CPU time as the
record's log has it, and loss null); train_time_ms sums step_ms (validation
excluded, every step included: gpt-train's definition); record_time_ms is the
record's own clock (paused around validation, reset at the start of step 10, so
that the first steps, which include torch.compile, do not count). The first
--skip steps (and the first --skip of each fixed-window part) are left out of the
medians and reported as first_steps_ms. peak_bytes is
torch.cuda.max_memory_allocated (per part in segment records, reset at each
part's start), peak_reserved_bytes max_memory_reserved.

Needs PyTorch with CUDA, numpy, safetensors (the GPU machine has them); modes
patched and metadata need only Python. Exit status: 0 done, 1 error, 2 usage.
"""
import argparse
import hashlib
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
DEFAULT_RECORD = os.path.join(TOP, ".carry", "record", "train_gpt.py")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import flops  # noqa: E402  (tools/flops.py: spec 12's FLOPs, one place)

PROG = "record_run.py"
BIN_MAGIC = 20240520
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RECORD_STEPS = 1390
BLOCK = 128
MAX_SEQ = 65536

# The record's configuration as gpt-init writes it into __metadata__ (gpt-weights(5)).
RECORD_META = {
    "format": "gpt-weights/1", "vocab_size": "50304", "num_layers": "12", "model_dim": "768",
    "num_heads": "6", "mlp_hidden": "3072", "value_embeds": "3", "no_attention": "7",
    "softcap": "15", "norm_eps": "0.0078125", "rope_freqs": "32", "rope_min_freq": "0.0009765625",
    "attn_block": "128", "eot_token": "50256", "max_seq": "65536",
}
# gpt-weights(5) defaults for keys a file may omit
META_DEFAULTS = {"no_attention": "", "softcap": "15", "norm_eps": "0.0078125", "rope_freqs": "32",
                 "rope_min_freq": "0.0009765625", "attn_block": "128", "eot_token": "50256",
                 "max_seq": "65536"}
NUMERIC_KEYS = ("softcap", "norm_eps", "rope_min_freq")

QUIET = False
RANK = 0        # this process's rank (torchrun's RANK, else 0); only rank 0 writes
WORLD = 1       # WORLD_SIZE
LOCAL_RANK = 0  # the GPU this process uses


class Fail(Exception):
    """An error to report as 'record_run.py: MESSAGE' with exit status 1."""


def note(msg):
    if not QUIET and RANK == 0:
        print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def clean(v):
    """JSON-safe: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def emit(obj):
    if RANK != 0:
        return
    sys.stdout.write(json.dumps(clean(obj)) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# Patches (pure text; testable without torch)

MAIN_MARK = "\n# -----------------------------------------------------------------------------\n# int main\n"


def patch_source(src, norm_eps):
    """The record's source with P1-P3 applied; norm_eps None leaves rms_norm alone.
    Returns (text, list of patch names applied). Raises Fail if a target is missing."""
    def once(text, old, new, name):
        n = text.count(old)
        if n != 1:
            raise Fail(f"patch {name}: target {old!r} found {n} times (expected once); "
                       "is .carry/record/train_gpt.py the 2025-01-04 record's script?")
        return text.replace(old, new)

    applied = []
    src = once(src, "with open(sys.argv[0]) as f:", "with open(__file__) as f:", "P1 code-path")
    applied.append("P1 code-path")
    n = src.count(MAIN_MARK)
    if n != 1:
        raise Fail(f"patch P2 stop-main: the '# int main' ruler found {n} times (expected once)")
    src = src[:src.index(MAIN_MARK)] + "\n"
    applied.append("P2 stop-main")
    if norm_eps is not None:
        src = once(src, "return F.rms_norm(x, (x.size(-1),))",
                   f"return F.rms_norm(x, (x.size(-1),), eps={float(norm_eps)!r})", "P3 norm-eps")
        applied.append(f"P3 norm-eps={float(norm_eps)!r}")
    for name in ("class GPT(nn.Module):", "class Muon(torch.optim.Optimizer):",
                 "class DistributedDataLoader:", "def norm(x):"):
        if name not in src:
            raise Fail(f"the record's script lacks {name!r} above '# int main'")
    return src, applied


# ---------------------------------------------------------------------------
# Files (pure Python)

def read_bin_header(path):
    """Token count of an llm.c .bin shard (256 int32 header, magic 20240520, version 1, uint16)."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(1024)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise Fail(f"{path}: {e.strerror}")
    if len(hdr) < 1024:
        raise Fail(f"{path}: shorter than the 1024-byte header of an llm.c .bin shard")
    magic, version, ntok = struct.unpack("<3i", hdr[:12])
    if magic != BIN_MAGIC:
        first = struct.unpack("<I", hdr[:4])[0]
        zstd = hdr[:4] == ZSTD_MAGIC or first & 0xFFFFFFF0 == 0x184D2A50  # a frame or a skippable frame
        hint = " (a zstd file, a gpt-* shard?: export it with gpt-tokshard --export)" if zstd else ""
        raise Fail(f"{path}: not an llm.c .bin shard (magic {magic}, expected {BIN_MAGIC}){hint}")
    if version != 1:
        raise Fail(f"{path}: .bin version {version}; the record reads version 1 (uint16 tokens)")
    if ntok < 0 or size != 1024 + 2 * ntok:
        raise Fail(f"{path}: header says {ntok} tokens but the file has {size - 1024} bytes of tokens")
    return ntok


def read_st_header(path):
    """(tensor entries, metadata) of a safetensors file, read with the standard library."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:4] == ZSTD_MAGIC:
                raise Fail(f"{path}: zstd-compressed; decompress it first")
            if len(head) < 8:
                raise Fail(f"{path}: too short for a safetensors file")
            n = struct.unpack("<Q", head)[0]
            if n > 100_000_000:
                raise Fail(f"{path}: safetensors header of {n} bytes (over the 100 MB limit)")
            raw = f.read(n)
    except OSError as e:
        raise Fail(f"{path}: {e.strerror}")
    if len(raw) != n:
        raise Fail(f"{path}: truncated safetensors header")
    try:
        h = json.loads(raw)
    except ValueError as e:
        raise Fail(f"{path}: safetensors header is not JSON ({e})")
    if not isinstance(h, dict):
        raise Fail(f"{path}: safetensors header is not a JSON object")
    meta = h.pop("__metadata__", None) or {}
    return h, meta


def plain_weights(path, tmpdir):
    """The path of an uncompressed copy of a weights file (zstd -dc for .zst)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise Fail(f"{path}: {e.strerror}")
    if magic != ZSTD_MAGIC:
        return path
    out = os.path.join(tmpdir, os.path.basename(path) + ".plain")
    try:
        with open(out, "wb") as o:
            subprocess.run(["zstd", "-q", "-d", "-c", path], stdout=o, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise Fail(f"{path}: cannot decompress with zstd ({e})")
    return out


def check_arch(meta):
    """Mismatches between a file's configuration metadata and the record's (list of strings)."""
    bad = []
    for k, want in RECORD_META.items():
        if k in ("format", "norm_eps"):  # norm_eps may differ: it sets patch P3
            continue
        got = meta.get(k, META_DEFAULTS.get(k))
        if got is None:
            bad.append(f"{k} missing (record: {want})")
            continue
        if k in NUMERIC_KEYS:
            try:
                same = float(got) == float(want)
            except ValueError:
                same = False
        elif k == "no_attention":
            same = sorted(x for x in got.split(",") if x) == sorted(x for x in want.split(",") if x)
        else:
            same = got == want
        if not same:
            bad.append(f"{k}={got} (record: {want})")
    if meta.get("format", "gpt-weights/1") != "gpt-weights/1":
        bad.append(f"format={meta['format']} (expected gpt-weights/1)")
    return bad


def record_metadata(norm_eps, seed, extra=None):
    m = dict(RECORD_META)
    m["norm_eps"] = repr(float(norm_eps)) if norm_eps is not None else RECORD_META["norm_eps"]
    m["init"] = "record-torch"
    m["init_seed"] = str(seed)
    m.update(extra or {})
    return m


def windows_list(text):
    try:
        ws = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers")
    if not ws or min(ws) < 1:
        raise argparse.ArgumentTypeError(f"'{text}': windows are integers >= 1")
    return ws


def record_window(step, n):
    """The record's window line (L476-479) with n steps in place of 1390."""
    x = step / n
    assert 0 <= x <= 1
    return int(((1 - x) * 128 + x * 1856) // 128)


def record_lr(it, n, cooldown_frac):
    """The record's get_lr (L464-472) with n steps in place of 1390."""
    t = 1 - it / n
    assert 1 >= t > 0
    return 1.0 if t >= cooldown_frac else t / cooldown_frac


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------
# The record's code, loaded

class Record:
    """The patched script exec'd into a namespace (ns), plus torch modules."""

    def __init__(self, path, norm_eps):
        try:
            src = open(path).read()
        except OSError as e:
            raise Fail(f"{path}: {e.strerror} (run tools/record-fetch.sh first)")
        text, self.applied = patch_source(src, norm_eps)
        self.path = path
        self.norm_eps = norm_eps
        self.native = None
        self.ns = {"__name__": "record_train_gpt", "__file__": os.path.abspath(path), "rank": RANK}  # G1
        note(f"loading {path} with patches: {', '.join(self.applied)}, G1 rank={RANK} (per process)")
        exec(compile(text, path, "exec"), self.ns)
        self.sha256 = hashlib.sha256(src.encode()).hexdigest()
        import torch
        self.torch = torch

    def probe_eps(self):
        """The epsilon that this PyTorch's F.rms_norm uses without an eps argument on
        bf16 input, eager and compiled (spec 4.1: the record's nightly used 2^-7):
        rms_norm of a constant row c = 2^-12 is c / sqrt(c^2 + eps)."""
        if self.native is not None:
            return self.native
        torch = self.torch
        c = 2.0 ** -12
        x = torch.full((1, 128), c, dtype=torch.bfloat16, device="cuda")

        def f(x):
            return torch.nn.functional.rms_norm(x, (x.size(-1),))

        def est(y):
            y = y.float()[0, 0].item()
            return c * c * (1 / (y * y) - 1)
        try:
            r = {"eager": est(f(x)), "compiled": est(torch.compile(f)(x))}
        except Exception as e:  # a probe only: never stop the run for it
            note(f"warning: the rms_norm epsilon probe failed: {e}")
            self.native = {"eager": None, "compiled": None}
            return self.native
        self.native = r
        note(f"PyTorch {torch.__version__}: rms_norm without eps on bf16 uses eps ~ {r['eager']:.3g} (eager), "
             f"{r['compiled']:.3g} (compiled); 2^-7 = 0.0078125, 2^-23 = 1.19e-07; "
             f"this run: {self.norm_eps if self.norm_eps is not None else 'native'}")
        return r

    def __getattr__(self, name):
        try:
            return self.ns[name]
        except KeyError:
            raise AttributeError(name)


LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launcher_ranks(env, mode):
    """(rank, world size, local rank) from a launcher's RANK, WORLD_SIZE, LOCAL_RANK
    (torchrun sets all three, and MASTER_ADDR/MASTER_PORT), or None when none is set.
    Raises Fail for a partial or inconsistent set, or a mode other than steps on
    several ranks."""
    have = [k for k in LAUNCH_VARS if k in env]
    if not have:
        return None
    if len(have) != len(LAUNCH_VARS):
        raise Fail(f"{', '.join(have)} set but not {', '.join(k for k in LAUNCH_VARS if k not in env)}: "
                   "run under torchrun (which sets all three) or with none of them")
    try:
        rank, world, local = (int(env[k]) for k in LAUNCH_VARS)
    except ValueError:
        raise Fail(f"RANK, WORLD_SIZE, LOCAL_RANK must be integers (got {[env[k] for k in LAUNCH_VARS]})")
    if world < 1 or not 0 <= rank < world or local < 0:
        raise Fail(f"RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}: need 0 <= RANK < WORLD_SIZE, LOCAL_RANK >= 0")
    if world > 1 and mode != "steps":
        raise Fail(f"--mode {mode} runs on one GPU; only --mode steps runs on several ranks (WORLD_SIZE={world})")
    if world > 1 and not all(k in env for k in ("MASTER_ADDR", "MASTER_PORT")):
        raise Fail(f"WORLD_SIZE={world} without MASTER_ADDR and MASTER_PORT: run under torchrun")
    return rank, world, local


def set_env(mode):
    """One process: RANK=0 etc. set here. Under torchrun: its variables are used."""
    global RANK, WORLD, LOCAL_RANK
    env = os.environ
    env["NCCL_NVLS_ENABLE"] = "0"
    got = launcher_ranks(env, mode)
    if got is not None:
        RANK, WORLD, LOCAL_RANK = got
        if WORLD == 1 and not all(k in env for k in ("MASTER_ADDR", "MASTER_PORT")):
            env["MASTER_ADDR"] = "127.0.0.1"
            env["MASTER_PORT"] = str(free_port())
        return
    env["RANK"] = "0"
    env["LOCAL_RANK"] = "0"
    env["WORLD_SIZE"] = "1"
    env["MASTER_ADDR"] = "127.0.0.1"
    env["MASTER_PORT"] = str(free_port())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_dist(R):
    """The record's L401-404 (one rank, or torchrun's ranks)."""
    torch = R.torch
    import torch.distributed as dist
    assert torch.cuda.is_available(), "no CUDA device"
    torch.cuda.set_device(LOCAL_RANK)
    dist.init_process_group(backend="nccl", device_id=torch.device("cuda", LOCAL_RANK))
    dist.barrier()
    return dist


def build_model(R, a, meta_eps):
    """The record's L440-445 (after torch.manual_seed), then --save-init, --init-weights."""
    torch = R.torch
    torch.manual_seed(a.seed)
    model = R.GPT(vocab_size=50304, num_layers=12, num_heads=6, model_dim=768)
    model = model.cuda()
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            m.bfloat16()
    if a.save_init and RANK == 0:
        eps = meta_eps if meta_eps is not None else R.norm_eps
        if eps is None:  # native: the probed value, to the nearest power of two
            probed = R.probe_eps()["compiled"]
            eps = 2.0 ** round(math.log2(probed)) if probed and probed > 0 else 2.0 ** -7
        save_weights(R, model, a.save_init, record_metadata(eps, a.seed, {"torch": torch.__version__}))
    if a.init_weights:
        load_weights(R, model, a.init_plain, a.init_weights)
    return model


def save_weights(R, model, path, meta, tensors=None):
    from safetensors.torch import save_file
    sd = tensors if tensors is not None else {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path + ".tmp"
    try:
        save_file(sd, tmp, metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    note(f"wrote {path} ({len(sd)} tensors)")


def strip_prefix(name):
    while True:
        for p in ("_orig_mod.", "module."):
            if name.startswith(p):
                name = name[len(p):]
                break
        else:
            return name


def load_weights(R, model, plain, shown):
    torch = R.torch
    from safetensors import safe_open
    got = {}
    with safe_open(plain, framework="pt") as f:
        for k in f.keys():
            name = strip_prefix(k)
            if name.startswith("optim."):  # a gpt-train checkpoint's optimizer state
                continue
            if name in got:
                raise Fail(f"{shown}: tensor {name} appears twice (after removing prefixes)")
            got[name] = f.get_tensor(k)
    params = dict(model.named_parameters())
    missing = [k for k in params if k not in got]
    extra = [k for k in got if k not in params]
    if missing or extra:
        raise Fail(f"{shown}: not the record's tensors: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                   f"unknown {extra[:5]}{'...' if len(extra) > 5 else ''}")
    rounded = []
    with torch.no_grad():
        for k, p in params.items():
            t = got[k]
            if tuple(t.shape) != tuple(p.shape):
                raise Fail(f"{shown}: {k} has shape {list(t.shape)}, the record's is {list(p.shape)}")
            if not t.dtype.is_floating_point:
                raise Fail(f"{shown}: {k} has dtype {t.dtype}, not a float type")
            v = t.to(p.dtype)
            if t.dtype != p.dtype and not torch.equal(v.to(t.dtype), t):
                rounded.append(k)
            p.copy_(v)
    for k in rounded:
        note(f"warning: {shown}: {k} is not exact in {params[k].dtype}: rounded")
    note(f"loaded {shown} ({len(params)} tensors)")


def perturb(R, model, seed=1234):
    """As tools/torch_ref.py --perturb: all-zero matrices (c_proj, lm_head) become
    N(0, 0.02^2), the 1-D scalars get + N(0, 0.1^2) (seeded, in state-dict order),
    so that every gradient is nonzero. Embeddings are left alone."""
    torch = R.torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if p.ndim == 2 and not p.any():
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.device, p.dtype))
            elif p.ndim == 1:
                p.add_((0.1 * torch.randn(p.shape, generator=g)).to(p.device, p.dtype))


def read_tokens(R, path, n):
    """The first n+1 tokens of a .bin: inputs int32 and targets int64 on the GPU, as the loader makes them."""
    import numpy as np
    ntok = read_bin_header(path)
    if ntok < n + 1:
        raise Fail(f"{path}: {ntok} tokens, {n + 1} needed")
    toks = np.fromfile(path, dtype="<u2", count=n + 1, offset=1024).astype(np.int64)
    t = R.torch.from_numpy(toks)
    return (t[:-1].to(device="cuda", dtype=R.torch.int32), t[1:].to(device="cuda", dtype=R.torch.int64))


def timed(torch, fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t)


# ---------------------------------------------------------------------------
# steps

def check_data(a):
    import glob
    files = sorted(glob.glob(a.train_bin))
    if not files:
        raise Fail(f"--train-bin {a.train_bin}: no such files")
    for f in files:
        n = read_bin_header(f)
        if n < a.batch_tokens + 2:
            raise Fail(f"{f}: {n} tokens; the record's loader needs at least batch + 2 = {a.batch_tokens + 2}")
    if a.val_tokens:
        vfiles = sorted(glob.glob(a.val_bin)) if a.val_bin else []
        if not vfiles:
            raise Fail(f"--val-bin {a.val_bin}: no such files (give --val-tokens 0 for none)")
        n = read_bin_header(vfiles[0])
        if n < a.val_tokens + 2:
            raise Fail(f"{vfiles[0]}: {n} tokens; {a.val_tokens} validation tokens need {a.val_tokens + 2} "
                       "(the record's loader would wrap around silently)")
    return files


def mode_steps(a):
    # the record's L511-512, L537 and the loader's assertion, checked before anything starts
    if a.batch_tokens % WORLD or (a.batch_tokens // WORLD > a.seq_len and (a.batch_tokens // WORLD) % a.seq_len):
        raise Fail(f"--batch-tokens {a.batch_tokens} over {WORLD} ranks: each rank's share must be at most "
                   f"--seq-len {a.seq_len} or a multiple of it")
    if a.val_tokens % (WORLD * a.seq_len):
        raise Fail(f"--val-tokens {a.val_tokens} is not a multiple of ranks x --seq-len = {WORLD * a.seq_len}")
    files = check_data(a)
    R = Record(a.record, a.norm_eps_value)
    torch = R.torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    dist = init_dist(R)
    native_eps = R.probe_eps()
    note(f"train files: {files}")
    train_loader = R.DistributedDataLoader(a.train_bin)
    val_loader = R.DistributedDataLoader(a.val_bin) if a.val_tokens else None
    model = build_model(R, a, a.meta_eps)
    cmodel = torch.compile(model)
    if a.no_ddp and WORLD > 1:
        raise Fail("--no-ddp needs one rank")
    ddp_model = cmodel if a.no_ddp else DDP(cmodel, device_ids=[LOCAL_RANK], broadcast_buffers=False,
                                             gradient_as_bucket_view=True)
    # the record's L450-461
    hidden_matrix_params = [p for p in model.blocks.parameters() if p.ndim == 2]
    embed_params = [model.embed.weight, *model.value_embeds.parameters()]
    scalar_params = [p for p in model.parameters() if p.ndim < 2]
    head_params = [model.lm_head.weight]
    optimizer1 = torch.optim.Adam([dict(params=embed_params, lr=0.6),
                                   dict(params=head_params, lr=0.008),
                                   dict(params=scalar_params, lr=0.04)],
                                  betas=(0.8, 0.95), fused=True)
    optimizer2 = R.Muon(hidden_matrix_params, lr=0.05, momentum=0.95)
    optimizers = [optimizer1, optimizer2]
    N = a.steps
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lambda it: record_lr(it, N, a.cooldown_frac))
                  for opt in optimizers]
    fixed = a.fixed_window
    parts = len(fixed) if fixed else 1
    per_part = N // parts

    def window_at(step):
        if fixed:
            return fixed[min(step // per_part, parts - 1)]
        return record_window(step, N)

    sliding_window_num_blocks = torch.tensor(1, dtype=torch.int32, device="cuda")
    micro_bs = a.seq_len
    local_tokens = a.batch_tokens // WORLD                # the loader's device_batch_size
    n_micro = max(1, local_tokens // micro_bs)            # chunks per rank per step (8/P in the record)
    val_batch = WORLD * micro_bs                          # the record's val_batch_size (L511)
    note(f"{WORLD} rank(s): {n_micro} micro-batch(es) of {min(local_tokens, micro_bs)} tokens per rank per step, "
         f"{a.val_tokens // val_batch} validation batches per rank")
    train_ms = 0.0           # sum of step_ms (gpt-train's train_time_ms)
    record_ms = 0.0          # the record's training_time_ms
    step_times = []
    val_loss = None
    part_times, part_first = [], 0
    peak_alloc = peak_resv = 0
    segments = []

    def close_part(end_step):
        nonlocal peak_alloc, peak_resv
        pa, pr = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        peak_alloc, peak_resv = max(peak_alloc, pa), max(peak_resv, pr)
        w = fixed[len(segments)] if fixed else None
        steady = part_times[a.skip:]
        med = median(steady)
        seg = {"type": "segment", "window": w, "first_step": part_first, "steps": len(part_times),
               "median_step_ms": med, "tokens_per_s": a.batch_tokens / (med / 1e3) if steady else None,
               "peak_bytes": pa, "peak_reserved_bytes": pr}
        if w is not None and steady:
            r = flops.flops_report(window=w, tokens=a.batch_tokens, ms=med)
            seg["tflops"], seg["mfu"] = r["tflops"], r["mfu"]
        segments.append(seg)
        emit(seg)
        torch.cuda.reset_peak_memory_stats()

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step in range(N + 1):
        last_step = step == N
        if step == 10:  # the record's L494-496: the clock restarts at step 10
            record_ms = 0.0
            t0 = time.perf_counter()
        window = window_at(step)
        sliding_window_num_blocks.copy_(window)
        # ---- validation (the record's L502-524)
        if val_loader is not None and (last_step or (a.val_every > 0 and step % a.val_every == 0)):
            torch.cuda.synchronize()
            record_ms += 1e3 * (time.perf_counter() - t0)
            tv = time.perf_counter()
            cmodel.eval()
            val_loader.reset()
            val_steps = a.val_tokens // val_batch
            vl = 0.0
            for _ in range(val_steps):
                with torch.no_grad():
                    inputs_val, targets_val = val_loader.next_batch(val_batch)
                    vl += ddp_model(inputs_val, targets_val, sliding_window_num_blocks)
            dist.all_reduce(vl, op=dist.ReduceOp.AVG)
            vl /= val_steps
            val_loss = vl.item()
            emit({"type": "val", "step": step, "val_loss": val_loss, "val_tokens": val_steps * val_batch,
                  "window": window, "ms": 1e3 * (time.perf_counter() - tv), "train_time_ms": train_ms,
                  "record_time_ms": record_ms})
            note(f"step {step}/{N} val_loss {val_loss:.4f} (window {window})")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        if last_step:
            break
        if fixed and step > 0 and step % per_part == 0 and step // per_part < parts:
            close_part(step)
            part_times, part_first = [], step
        # ---- training (the record's L535-552)
        ts = time.perf_counter()
        cmodel.train()
        inputs_train, targets_train = train_loader.next_batch(a.batch_tokens)
        assert len(inputs_train) <= micro_bs or len(inputs_train) % micro_bs == 0
        loss_sum = None
        for micro_inputs_train, micro_targets_train in zip(inputs_train.split(micro_bs), targets_train.split(micro_bs)):
            loss = ddp_model(micro_inputs_train, micro_targets_train, sliding_window_num_blocks)
            loss.backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        frac = min(step / a.momentum_warmup, 1) if a.momentum_warmup > 0 else 1
        momentum = (1 - frac) * 0.85 + frac * 0.95
        for group in optimizer2.param_groups:
            group["momentum"] = momentum
        lr_scale = schedulers[0].get_last_lr()[0] / 0.6
        for opt, sched in zip(optimizers, schedulers):
            opt.step()
            if step != N - 1:
                sched.step()
        model.zero_grad(set_to_none=True)
        if a.step_sync:
            torch.cuda.synchronize()
        step_ms = 1e3 * (time.perf_counter() - ts)
        if a.step_sync and WORLD > 1:  # after the step's time is taken: the loss over all ranks' tokens
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        loss_val = loss_sum.item() / n_micro if a.step_sync else None
        train_ms += step_ms
        step_times.append(step_ms)
        part_times.append(step_ms)
        emit({"type": "train", "step": step, "loss": loss_val, "lr_scale": lr_scale, "momentum": momentum,
              "window": window, "tokens": a.batch_tokens, "step_ms": step_ms,
              "tokens_per_s": a.batch_tokens / (step_ms / 1e3), "train_time_ms": train_ms,
              "record_time_ms": record_ms + 1e3 * (time.perf_counter() - t0)})
        if step < a.skip:
            note(f"step {step} took {step_ms / 1e3:.1f} s" + (" (includes torch.compile)" if step == 0 else ""))
        elif a.progress_every and (step + 1) % a.progress_every == 0:
            note(f"step {step + 1}/{N} loss {loss_val if loss_val is None else round(loss_val, 4)} "
                 f"{step_ms:.0f} ms/step (median so far {median(step_times[a.skip:]):.0f})")
        if loss_val is not None and not math.isfinite(loss_val):
            raise Fail(f"non-finite training loss at step {step}")
    torch.cuda.synchronize()
    if val_loader is None:
        record_ms += 1e3 * (time.perf_counter() - t0)
    if part_times or not segments:
        close_part(N)
    peaks = torch.tensor([peak_alloc, peak_resv], dtype=torch.int64, device="cuda")
    all_peaks = [torch.zeros_like(peaks) for _ in range(WORLD)]
    dist.all_gather(all_peaks, peaks)
    all_peaks = [p.tolist() for p in all_peaks]
    emit({"type": "end", "steps": len(step_times), "world_size": WORLD,
          "peak_bytes_per_rank": [p[0] for p in all_peaks],
          "peak_reserved_bytes_per_rank": [p[1] for p in all_peaks],
          "train_time_ms": train_ms, "record_time_ms": record_ms,
          "first_steps_ms": step_times[:a.skip], "median_step_ms": median(step_times[a.skip:]),
          "val_loss": val_loss, "peak_bytes": peak_alloc, "peak_reserved_bytes": peak_resv,
          "device": torch.cuda.get_device_name(), "torch": torch.__version__,
          "norm_eps": R.norm_eps if R.norm_eps is not None else "native", "native_eps": native_eps,
          "record_sha256": R.sha256})
    dist.destroy_process_group()


# ---------------------------------------------------------------------------
# grad

def mode_grad(a):
    read_bin_header(a.tokens)
    R = Record(a.record, a.norm_eps_value)
    torch = R.torch
    native_eps = R.probe_eps()
    model = build_model(R, a, a.meta_eps)
    if a.perturb_out:
        perturb(R, model)
        meta = dict(a.meta) if a.meta else record_metadata(R.norm_eps, a.seed)
        meta["perturbed"] = "record_run.py: zero matrices N(0,0.02^2), scalars +N(0,0.1^2), seed 1234"
        save_weights(R, model, a.perturb_out, meta)
    inputs, targets = read_tokens(R, a.tokens, a.seq_len)
    window = torch.tensor(a.window, dtype=torch.int32, device="cuda")
    cmodel = torch.compile(model)
    cmodel.train()
    note(f"forward + backward of {a.seq_len} tokens at window {a.window} (the first call compiles)")
    box = {}

    def run():
        loss = cmodel(inputs, targets, window)
        loss.backward()
        box["loss"] = loss
    ms = timed(torch, run)
    loss = box["loss"].item()
    grads = {}
    for k, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        grads[k] = g.detach().float().cpu().contiguous()
    save_weights(R, model, a.out, {"loss": repr(loss), "tokens": str(a.seq_len), "window": str(a.window),
                                   "source": "record_run.py --mode grad", "torch": torch.__version__,
                                   "norm_eps": str(R.norm_eps if R.norm_eps is not None else "native")},
                 tensors=grads)
    emit({"type": "grad", "loss": loss, "tokens": a.seq_len, "window": a.window, "ms": ms,
          "norm_eps": R.norm_eps if R.norm_eps is not None else "native", "native_eps": native_eps})


# ---------------------------------------------------------------------------
# ops

class _Stop(Exception):
    pass


def record_block_mask(R, model, inputs, targets, window):
    """The record's own BlockMask for these tokens and window: run the uncompiled
    forward until its first use of the embedding (right after
    'block_mask = create_doc_swc_block_mask(...)'), stop it there and take the local
    variable from its frame. No patch of the model code is needed."""
    def hook(mod, args):
        raise _Stop()
    h = model.embed.register_forward_pre_hook(hook)
    try:
        model(inputs, targets, window)
    except _Stop as e:
        tb = e.__traceback__
        while tb is not None:
            f = tb.tb_frame
            if f.f_code.co_name == "forward" and isinstance(f.f_locals.get("block_mask"), R.BlockMask):
                return f.f_locals["block_mask"]
            tb = tb.tb_next
        raise Fail("the record's forward has no local 'block_mask' before its embedding")
    finally:
        h.remove()
    raise Fail("the record's forward did not call its embedding")


def mask_keys(torch, inputs, W, eot=50256):
    """Mean allowed keys per query (spec 5's token-level rule) for these tokens."""
    T = inputs.numel()
    idx = torch.arange(T, device=inputs.device)
    doc_start = torch.where(inputs == eot, idx, torch.zeros_like(idx)).cummax(0).values
    win_start = ((idx // BLOCK - W + 1).clamp(min=0)) * BLOCK
    lo = torch.maximum(doc_start, win_start)
    return (idx - lo + 1).double().mean().item()


def mode_ops(a):
    read_bin_header(a.tokens)
    R = Record(a.record, a.norm_eps_value)
    torch = R.torch
    dist = init_dist(R)
    R.probe_eps()
    model = build_model(R, a, a.meta_eps)
    if not a.init_weights:
        perturb(R, model)  # nonzero head and projections, as a trained model has
    inputs, targets = read_tokens(R, a.tokens, a.seq_len)
    T = a.seq_len
    cmodel = torch.compile(model)
    flex = torch.compile(R.flex_attention)
    hidden = [p for p in model.blocks.parameters() if p.ndim == 2]
    opt1 = torch.optim.Adam([dict(params=[model.embed.weight, *model.value_embeds.parameters()], lr=0.6),
                             dict(params=[model.lm_head.weight], lr=0.008),
                             dict(params=[p for p in model.parameters() if p.ndim < 2], lr=0.04)],
                            betas=(0.8, 0.95), fused=True)
    opt2 = R.Muon(hidden, lr=0.05, momentum=0.95)
    for opt in (opt1, opt2):  # the optimizer step is timed with lr 0: same work, weights unchanged
        for group in opt.param_groups:
            group["lr"] = 0.0
    wt = torch.tensor(1, dtype=torch.int32, device="cuda")
    H, hd = 6, 128

    def bench(name, fn, W, extra, fl=None):
        first = [timed(torch, fn) for _ in range(a.warmup)]
        torch.cuda.reset_peak_memory_stats()
        ts = [timed(torch, fn) for _ in range(a.repeat)]
        rec = {"type": "op", "op": name, "window": W, "tokens": T, "ms": median(ts), "ms_min": min(ts),
               "repeat": a.repeat, "first_ms": first, "peak_bytes": torch.cuda.max_memory_allocated(),
               "peak_reserved_bytes": torch.cuda.max_memory_reserved()}
        rec.update(extra)
        if fl:
            rec.update(fl(rec["ms"]))
        emit(rec)
        note(f"W={W} {name}: {rec['ms']:.2f} ms (first calls {', '.join(f'{x:.0f}' for x in first)} ms)")

    masks = {}  # all masks first, before anything is compiled (the hook would change the module)
    for W in a.windows:
        wt.copy_(W)
        with torch.no_grad():
            masks[W] = record_block_mask(R, model, inputs, targets, wt)
    for W in a.windows:
        wt.copy_(W)
        bm = masks.pop(W)
        L_mask = mask_keys(torch, inputs, W)
        tiles = (bm.kv_num_blocks.sum() + (bm.full_kv_num_blocks.sum() if bm.full_kv_num_blocks is not None else 0)).item()
        L_tile = tiles * BLOCK * BLOCK / T
        Ls = {"L_mask": L_mask, "L_tile": L_tile, "L_formula": flops.keys_per_query(W)}

        def model_fl(ms, fwd=False):
            r = flops.flops_report(L=L_mask, tokens=T, ms=ms, forward_only=fwd)
            rf = flops.flops_report(window=W, tokens=T, ms=ms, forward_only=fwd)
            return {"tflops": r["tflops"], "mfu": r["mfu"], "tflops_formula_L": rf["tflops"], "mfu_formula_L": rf["mfu"]}

        def fwd_bwd():
            cmodel(inputs, targets, wt).backward()
        cmodel.train()
        bench("model_fwd_bwd", fwd_bwd, W, Ls, model_fl)

        def step():
            opt1.step()
            opt2.step()
        bench("optim_step", step, W, {})
        model.zero_grad(set_to_none=True)

        def fwd():
            with torch.no_grad():
                cmodel(inputs, targets, wt)
        cmodel.eval()
        bench("model_fwd_nograd", fwd, W, Ls, lambda ms: model_fl(ms, True))
        cmodel.train()

        g = torch.Generator(device="cuda").manual_seed(W)
        q, k, v = (torch.randn(1, H, T, hd, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        q, k = R.norm(q), R.norm(k)
        dy = torch.randn(1, H, T, hd, device="cuda", dtype=torch.bfloat16, generator=g)

        def attn_fl(ms, fwd_only):
            r = flops.flops_report(L=L_mask, tokens=T, ms=ms, attention_only=True, attn_layers=1, forward_only=fwd_only)
            rt = flops.flops_report(L=L_tile, tokens=T, ms=ms, attention_only=True, attn_layers=1, forward_only=fwd_only)
            return {"tflops": r["tflops"], "mfu": r["mfu"], "tflops_tile": rt["tflops"]}

        def f_fwd():
            with torch.no_grad():
                flex(q, k, v, block_mask=bm)
        bench("flex_fwd", f_fwd, W, {"L_mask": L_mask, "L_tile": L_tile}, lambda ms: attn_fl(ms, True))
        qg, kg, vg = (x.detach().requires_grad_(True) for x in (q, k, v))

        def f_fwd_bwd():
            qg.grad = kg.grad = vg.grad = None
            flex(qg, kg, vg, block_mask=bm).backward(dy)
        bench("flex_fwd_bwd", f_fwd_bwd, W, {"L_mask": L_mask, "L_tile": L_tile}, lambda ms: attn_fl(ms, False))
        q = k = v = qg = kg = vg = dy = bm = None  # free them before the next window
    dist.destroy_process_group()


# ---------------------------------------------------------------------------

def parse(argv):
    ap = argparse.ArgumentParser(prog="record_run.py", description=__doc__.split("\n\n")[0],
                                 epilog="See the header of tools/record_run.py for modes, patches and output.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", required=True, choices=("steps", "grad", "ops", "init", "patched", "metadata"))
    ap.add_argument("--record", default=DEFAULT_RECORD, help="the record's script (default .carry/record/train_gpt.py)")
    ap.add_argument("--norm-eps", default=None,
                    help="RMS-norm epsilon patched into norm() (default: --init-weights' norm_eps, else 2^-7); "
                         "'native' leaves the script's rms_norm call alone")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed before building the model (default 0)")
    ap.add_argument("--init-weights", metavar="FILE", help="start from these gpt-weights(5) weights")
    ap.add_argument("--save-init", metavar="FILE", help="write the record model's own initial weights (gpt-weights(5))")
    ap.add_argument("--seq-len", type=int, default=65536, help="tokens per micro-batch / T of grad and ops (default 65536)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    g = ap.add_argument_group("steps")
    g.add_argument("--train-bin", metavar="PATTERN", help="training .bin shards (glob, sorted)")
    g.add_argument("--val-bin", metavar="PATTERN", help="validation .bin shards (the first file is read)")
    g.add_argument("--steps", type=int, help="training steps N (the record: 1390)")
    g.add_argument("--val-every", type=int, default=0, help="validate at steps 0, K, 2K, ... and N (default 0: at N only)")
    g.add_argument("--val-tokens", type=int, default=None,
                   help="validation tokens (default 10485760 with --val-bin; 0: no validation)")
    g.add_argument("--fixed-window", type=windows_list, metavar="W[,W...]",
                   help="hold the window at W; several: equal parts of the run, one per window")
    g.add_argument("--batch-tokens", type=int, default=8 * 65536, help="tokens per step (default 524288)")
    g.add_argument("--cooldown-frac", type=float, default=0.4, help="lr decay fraction (default 0.4, the record's)")
    g.add_argument("--momentum-warmup", type=int, default=300, help="Muon momentum warmup steps (default 300)")
    g.add_argument("--skip", type=int, default=3, help="first steps (per part) left out of medians (default 3)")
    g.add_argument("--no-step-sync", dest="step_sync", action="store_false",
                   help="no torch.cuda.synchronize() after each step (then loss is null)")
    g.add_argument("--no-ddp", action="store_true", help="call the compiled model without the DDP wrapper")
    g.add_argument("--progress-every", type=int, default=10, help="stderr progress every K steps (default 10)")
    g = ap.add_argument_group("grad and ops")
    g.add_argument("--tokens", metavar="FILE.bin", help="llm.c .bin file; its first T+1 tokens are used")
    g.add_argument("--window", type=int, default=14, help="grad: attention window in blocks (default 14)")
    g.add_argument("--out", metavar="FILE", help="grad: gradient file (safetensors)")
    g.add_argument("--perturb-out", metavar="FILE",
                   help="grad: perturb the zero-initialised tensors first (as torch_ref.py --perturb) and write those weights here")
    g.add_argument("--windows", type=windows_list, default=[1, 7, 14], help="ops: windows (default 1,7,14)")
    g.add_argument("--repeat", type=int, default=10, help="ops: timed calls per op (median; default 10)")
    g.add_argument("--warmup", type=int, default=2, help="ops: untimed first calls per op (default 2)")
    a = ap.parse_args(argv)
    err = ap.error
    if a.seq_len < BLOCK or a.seq_len % BLOCK or a.seq_len > MAX_SEQ:
        err(f"--seq-len must be a multiple of {BLOCK} from {BLOCK} to {MAX_SEQ}")
    if a.norm_eps is not None and a.norm_eps != "native":
        try:
            if not float(a.norm_eps) > 0:
                raise ValueError
        except ValueError:
            err("--norm-eps takes a positive number or 'native'")
    if a.mode == "steps":
        if not a.train_bin or a.steps is None:
            err("--mode steps needs --train-bin and --steps")
        if a.steps < 1:
            err("--steps must be >= 1")
        if a.val_tokens is None:
            a.val_tokens = 10485760 if a.val_bin else 0
        if a.val_tokens < 0 or a.val_tokens % a.seq_len:
            err("--val-tokens must be a non-negative multiple of --seq-len")
        if a.val_every < 0 or a.skip < 0 or a.momentum_warmup < 0:
            err("--val-every, --skip and --momentum-warmup are >= 0")
        if a.batch_tokens < a.seq_len or a.batch_tokens % a.seq_len:
            err("--batch-tokens must be a positive multiple of --seq-len")
        if not 0 < a.cooldown_frac <= 1:
            err("--cooldown-frac must be in (0, 1]")
        if a.fixed_window and a.steps % len(a.fixed_window):
            err(f"--steps {a.steps} is not a multiple of the {len(a.fixed_window)} windows of --fixed-window")
    elif a.mode == "grad":
        if not a.tokens or not a.out:
            err("--mode grad needs --tokens and --out")
        if a.window < 1:
            err("--window must be >= 1")
    elif a.mode == "ops":
        if not a.tokens:
            err("--mode ops needs --tokens")
        if a.repeat < 1 or a.warmup < 1:
            err("--repeat and --warmup must be >= 1")
    elif a.mode == "init":
        if not a.save_init:
            err("--mode init needs --save-init")
    return a


def main(argv=None):
    global QUIET
    a = parse(sys.argv[1:] if argv is None else argv)
    QUIET = a.quiet
    try:
        with tempfile.TemporaryDirectory(prefix="record_run-") as tmp:
            a.meta, a.meta_eps, a.init_plain = None, None, None
            if a.init_weights:
                a.init_plain = plain_weights(a.init_weights, tmp)
                _, meta = read_st_header(a.init_plain)
                if meta.get("format"):
                    bad = check_arch(meta)
                    if bad:
                        raise Fail(f"{a.init_weights}: not the record's configuration: {'; '.join(bad)}")
                    a.meta = meta
                    a.meta_eps = float(meta.get("norm_eps", META_DEFAULTS["norm_eps"]))
                else:
                    note(f"{a.init_weights}: no gpt-weights metadata; assuming the record's configuration")
            if a.norm_eps == "native":
                a.norm_eps_value = None
            elif a.norm_eps is not None:
                a.norm_eps_value = float(a.norm_eps)
            else:
                a.norm_eps_value = a.meta_eps if a.meta_eps is not None else 2.0 ** -7
            if a.mode == "patched":
                try:
                    src = open(a.record).read()
                except OSError as e:
                    raise Fail(f"{a.record}: {e.strerror} (run tools/record-fetch.sh first)")
                text, applied = patch_source(src, a.norm_eps_value)
                sys.stdout.write(text)
                note("applied: " + ", ".join(applied))
                return 0
            if a.mode == "metadata":
                emit(record_metadata(a.norm_eps_value, a.seed))
                return 0
            set_env(a.mode)
            if a.mode == "steps":
                mode_steps(a)
            elif a.mode == "grad":
                mode_grad(a)
            elif a.mode == "ops":
                mode_ops(a)
            elif a.mode == "init":
                R = Record(a.record, a.norm_eps_value)
                build_model(R, a, a.norm_eps_value)
    except Fail as e:
        print(f"{PROG}: {f'rank {RANK}: ' if WORLD > 1 else ''}{e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
