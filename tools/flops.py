#!/usr/bin/env python3
"""flops.py - model FLOPs per token and MFU of the record's GPT, by spec section 12.

The one place where the bench scripts (bench/train_gpu.sh, bench/time-to-loss.sh)
and tools/record_run.py count FLOPs. Standard library only.

Conventions (spec 12): a multiply-add is 2 FLOPs; backward = 2 x forward for every
matmul, so forward+backward = 3 x forward; embeddings, norms, element-wise work and
the optimizer are not counted.

  dense    6 N per token, N = matmul weights = A*4*D^2 + Lyr*2*D*H + D*V
           (record: A = 11 attention layers, Lyr = 12, D = 768, H = 3072,
           V = 50304: N = 121,208,832, 6N = 727,252,992)
  attention 3 * A * 4 * D * L per token (fwd+bwd; record: 101,376 * L), L = keys a
           query attends:
             mask  128 (W - 1) + 64.5, the mean number of allowed keys without
                   document boundaries, away from the sequence start (default)
             tile  128 W, what a 128x128-tiled kernel computes
           or a measured L (popcount of the mask / T) passed with --L.

MFU = achieved model FLOP/s / peak; peak = 989.4 TFLOP/s dense bf16, the spec's
H100 SXM figure (the H200 has the same tensor cores and clocks: same peak).
Override with --peak-tflops or the PEAK_TFLOPS environment variable.

    python3 tools/flops.py --window 7                      # FLOPs per token, JSON
    python3 tools/flops.py --window 7 --ms-per-step 1100   # + tokens/s, TFLOP/s, MFU
    python3 tools/flops.py --window 14 --tokens 65536 --ms 5.0 --attention-only --layers-attn 1

Output: one JSON object (keys below, in flops_report()).
"""
import argparse
import json
import os
import sys

RECORD = dict(dim=768, mlp_hidden=3072, vocab=50304, layers=12, attn_layers=11, block=128)
PEAK_TFLOPS = 989.4  # dense bf16, H100 SXM (spec 12.3); the H200 has the same peak


def dense_params(dim=768, mlp_hidden=3072, vocab=50304, layers=12, attn_layers=11):
    """Weights that take part in matmuls: q,k,v,o of the attention layers, MLP, lm_head."""
    return attn_layers * 4 * dim * dim + layers * 2 * dim * mlp_hidden + dim * vocab


def keys_per_query(window, mode="mask", block=128):
    """L of spec 12.2 for a window of `window` blocks, without document boundaries."""
    if window < 1:
        raise ValueError("window must be >= 1")
    if mode == "mask":
        return block * (window - 1) + (block + 1) / 2
    if mode == "tile":
        return float(block * window)
    raise ValueError("mode must be mask or tile")


def attention_flops_per_token(L, dim=768, attn_layers=11):
    """Attention core (QK^T and PV), forward + backward, per token."""
    return 3 * attn_layers * 4 * dim * L


def flops_per_token(window=None, L=None, mode="mask", cfg=None):
    """Model FLOPs per trained token (forward + backward): 6N + attention."""
    c = dict(RECORD, **(cfg or {}))
    if L is None:
        L = keys_per_query(window, mode, c["block"])
    n = dense_params(c["dim"], c["mlp_hidden"], c["vocab"], c["layers"], c["attn_layers"])
    return 6 * n + attention_flops_per_token(L, c["dim"], c["attn_layers"])


def peak_tflops(value=None):
    if value is not None:
        return float(value)
    env = os.environ.get("PEAK_TFLOPS")
    return float(env) if env else PEAK_TFLOPS


def flops_report(window=None, L=None, mode="mask", tokens=None, ms=None, peak=None,
                 attention_only=False, attn_layers=None, forward_only=False):
    """A dict: window, L, flops_per_token, and with tokens and ms: tokens_per_s, tflops, mfu."""
    cfg = {} if attn_layers is None else {"attn_layers": attn_layers}
    c = dict(RECORD, **cfg)
    L_mode = "given" if L is not None else mode
    if L is None:
        L = keys_per_query(window, mode, c["block"])
    if attention_only:
        fpt = attention_flops_per_token(L, c["dim"], c["attn_layers"])
    else:
        fpt = flops_per_token(L=L, cfg=cfg)
    if forward_only:
        fpt /= 3
    r = {"window": window, "L": L, "L_mode": L_mode,
         "flops_per_token": fpt, "peak_tflops": peak_tflops(peak)}
    if tokens is not None:
        r["tokens"] = tokens
        r["flops"] = fpt * tokens
    if tokens is not None and ms is not None and ms > 0:
        s = ms / 1e3
        r["ms"] = ms
        r["tokens_per_s"] = tokens / s
        r["tflops"] = fpt * tokens / s / 1e12
        r["mfu"] = r["tflops"] / r["peak_tflops"]
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", "-w", type=int, help="attention window in 128-token blocks")
    ap.add_argument("--L", type=float, help="keys per query (measured); overrides --window's formula")
    ap.add_argument("--mode", choices=("mask", "tile"), default="mask", help="L from the window: mask (default) or tile")
    ap.add_argument("--tokens", type=int, default=None, help="tokens processed in --ms (default 524288 with --ms)")
    ap.add_argument("--ms", "--ms-per-step", dest="ms", type=float, help="milliseconds for --tokens tokens")
    ap.add_argument("--peak-tflops", type=float, help="peak TFLOP/s (default: $PEAK_TFLOPS or 989.4)")
    ap.add_argument("--attention-only", action="store_true", help="count only the attention core")
    ap.add_argument("--layers-attn", type=int, help="attention layers (default 11)")
    ap.add_argument("--forward-only", action="store_true", help="forward FLOPs (1/3 of forward+backward)")
    a = ap.parse_args(argv)
    if a.window is None and a.L is None:
        ap.error("give --window or --L")
    if a.window is not None and a.window < 1:
        ap.error("--window must be >= 1")
    tokens = a.tokens if a.tokens is not None else (524288 if a.ms is not None else None)
    r = flops_report(a.window, a.L, a.mode, tokens, a.ms, a.peak_tflops, a.attention_only, a.layers_attn,
                     a.forward_only)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
