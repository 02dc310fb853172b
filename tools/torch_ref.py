#!/usr/bin/env python3
"""torch_ref.py - an outside reference for gpt-*: the record's model in PyTorch.

Written from the spec (shared/spec/record-2025-01-04.md sections 3-5), not copied
from the record's script. It loads a gpt-* weights file (safetensors, any config
that gpt-init writes), runs one micro-batch of tokens in fp32 on the CPU (or in
the record's precisions with --bf16 on a GPU), and writes the loss and every
parameter gradient to a safetensors file, so that tools/compare_grads.py can
compare them with gpt-eval --grad-out.

    python3 tools/torch_ref.py --weights w.safetensors --tokens batch.bin \
        --window 3 --out ref_grads.safetensors

--tokens is a raw llm.c .bin (header + uint16) holding T+1 tokens: inputs are
tokens[:-1], targets tokens[1:]. Needs torch and safetensors (not used by the
project itself: this is a test tool for the GPU machine).
"""
import argparse
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file


def load(path):
    tensors = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def read_bin(path):
    raw = open(path, "rb").read()
    hdr = np.frombuffer(raw[:1024], dtype="<i4")
    assert hdr[0] == 20240520, "bad magic"
    n = int(hdr[2])
    dt = "<u2" if hdr[1] == 1 else "<u4"
    toks = np.frombuffer(raw[1024:], dtype=dt)
    assert len(toks) == n
    return torch.tensor(toks.astype(np.int64))


class Cfg:
    def __init__(self, meta):
        self.vocab = int(meta["vocab_size"])
        self.layers = int(meta["num_layers"])
        self.dim = int(meta["model_dim"])
        self.heads = int(meta["num_heads"])
        self.hd = self.dim // self.heads
        self.ve = int(meta["value_embeds"])
        na = meta.get("no_attention", "")
        self.no_attn = set(int(x) for x in na.split(",") if x)
        self.softcap = float(meta.get("softcap", 15))
        self.eps = float(meta.get("norm_eps", 2 ** -7))
        self.rope_freqs = int(meta.get("rope_freqs", self.hd // 4))
        self.rope_min = float(meta.get("rope_min_freq", 1 / 1024))
        self.block = int(meta.get("attn_block", 128))
        self.eot = int(meta.get("eot_token", 50256))

    def layer_ve(self, i):
        if i < self.ve:
            return i
        if i >= self.layers - self.ve:
            return i - (self.layers - self.ve)
        return None


def rotary_tables(cfg, T, device):
    nf = cfg.rope_freqs
    half = cfg.hd // 2
    if nf > 1:
        freq = cfg.rope_min ** torch.linspace(0, 1, steps=nf, dtype=torch.float32)
    else:
        freq = torch.ones(nf, dtype=torch.float32)
    freq = torch.cat([freq, freq.new_zeros(half - nf)])
    t = torch.arange(T, dtype=torch.float32)
    theta = torch.outer(t, freq)
    return theta.cos().to(device), theta.sin().to(device)


def rotary(x, cos, sin):  # x [T, H, hd]
    dt = x.dtype
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c + x2 * s, -x1 * s + x2 * c), -1).to(dt)


def attention(q, k, v, docs, W, block):
    """q,k,v [T, H, hd]; the spec's mask: k <= q, same doc, q//B - k//B < W."""
    T, H, hd = q.shape
    scale = 1.0 / math.sqrt(hd)
    out = []
    for qb in range(T // block):
        q0, q1 = qb * block, (qb + 1) * block
        k0 = max(0, qb - W + 1) * block
        qs = q[q0:q1].transpose(0, 1).float()  # H, B, hd
        ks = k[k0:q1].transpose(0, 1).float()
        vs = v[k0:q1].transpose(0, 1).float()
        s = torch.matmul(qs, ks.transpose(1, 2)) * scale  # H, B, L
        qi = torch.arange(q0, q1)[:, None]
        ki = torch.arange(k0, q1)[None, :]
        allowed = (ki <= qi) & (docs[ki] == docs[qi])
        s = s.masked_fill(~allowed[None], float("-inf"))
        p = torch.softmax(s, dim=-1)
        out.append(torch.matmul(p, vs).transpose(0, 1).to(q.dtype))
    return torch.cat(out, 0)


def norm(x, eps):
    return F.rms_norm(x.float(), (x.size(-1),), eps=eps).to(x.dtype)


def forward(P, cfg, inputs, targets, W, dtype):
    T = inputs.numel()
    docs = (inputs == cfg.eot).cumsum(0)
    cos, sin = rotary_tables(cfg, T, inputs.device)
    lin = lambda x, w: F.linear(x, w.to(dtype))
    x0 = norm(P["embed.weight"][inputs].to(dtype), cfg.eps)
    x = x0
    ve = [P[f"value_embeds.embed.{j}.weight"][inputs].to(dtype) for j in range(cfg.ve)]
    skips = []
    half = cfg.layers // 2
    for i in range(cfg.layers):
        if i >= half:
            x = x + P["skip_weights"][i - half] * skips.pop()
        lam = P[f"blocks.{i}.lambdas"]
        x = lam[0] * x + lam[1] * x0
        if i not in cfg.no_attn:
            pre = f"blocks.{i}.attn."
            h = norm(x, cfg.eps)
            q = lin(h, P[pre + "c_q.weight"]).view(T, cfg.heads, cfg.hd)
            k = lin(h, P[pre + "c_k.weight"]).view(T, cfg.heads, cfg.hd)
            v = lin(h, P[pre + "c_v.weight"]).view(T, cfg.heads, cfg.hd)
            a = P[pre + "lambdas"]
            j = cfg.layer_ve(i)
            v = a[0] * v + a[1] * ve[j].view_as(v) if j is not None else a[0] * v
            q, k = norm(q, cfg.eps), norm(k, cfg.eps)
            q, k = rotary(q, cos, sin), rotary(k, cos, sin)
            y = attention(q, k, v, docs, W, cfg.block).reshape(T, cfg.dim)
            x = x + lin(y, P[pre + "c_proj.weight"])
        h = norm(x, cfg.eps)
        u = F.relu(lin(h, P[f"blocks.{i}.mlp.c_fc.weight"])).square()
        x = x + lin(u, P[f"blocks.{i}.mlp.c_proj.weight"])
        if i < half:
            skips.append(x)
    x = norm(x, cfg.eps)
    logits = lin(x, P["lm_head.weight"])
    if cfg.softcap > 0:
        logits = cfg.softcap * torch.tanh(logits / cfg.softcap)
    return F.cross_entropy(logits.float(), targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--tokens", required=True, help="raw .bin with T+1 tokens")
    ap.add_argument("--window", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bf16", action="store_true", help="record precisions (bf16 activations), on cuda")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--perturb", metavar="OUT",
                    help="first replace the zero-initialised tensors (c_proj, lm_head) by N(0, 0.02^2)"
                         " and jitter the scalars (seeded), write those weights to OUT (F32), and use them")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tensors, meta = load(a.weights)
    cfg = Cfg(meta)
    if a.perturb:
        g = torch.Generator().manual_seed(1234)
        new = {}
        for k, t in tensors.items():
            t = t.float()
            if t.ndim == 2 and not t.any():
                t = torch.randn(t.shape, generator=g) * 0.02
            elif t.ndim == 1:
                t = t + 0.1 * torch.randn(t.shape, generator=g)
            new[k] = t.contiguous()
        save_file(new, a.perturb, metadata=meta)
        tensors = new
    dev = "cuda" if a.bf16 else "cpu"
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    P = {}
    for k, t in tensors.items():
        k = k.removeprefix("_orig_mod.").removeprefix("module.")
        keep_bf16 = a.bf16 and ("embed" in k)
        P[k] = t.to(dev, torch.bfloat16 if keep_bf16 else torch.float32).requires_grad_(True)
    toks = read_bin(a.tokens).to(dev)
    inputs, targets = toks[:-1], toks[1:]
    loss = forward(P, cfg, inputs, targets, a.window, dtype)
    loss.backward()
    out = {k: p.grad.float().contiguous().cpu() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32).cpu()
           for k, p in P.items()}
    save_file(out, a.out, metadata={"loss": repr(loss.item()), "tokens": str(inputs.numel()), "window": str(a.window)})
    print(json.dumps({"loss": loss.item(), "tokens": inputs.numel(), "window": a.window}))


if __name__ == "__main__":
    sys.exit(main())
