#!/usr/bin/env python3
"""compare_grads.py - compare two gradient files (safetensors with a "loss" metadata key).

    python3 tools/compare_grads.py ours.safetensors ref.safetensors [--tol 1e-4]
        [--loss-tol X] [--min-cos C]

Prints one row per tensor: max |a-b| / max |b|, ||a-b|| / ||b|| (relative L2),
cosine similarity, and the loss of each; exits 1 if any relative max error exceeds
--tol ('inf' for no bound), the relative loss difference exceeds --loss-tol (default
--tol), or a cosine is below --min-cos. A tensor whose reference gradient is zero has
no cosine (nan, passes); one whose own gradient is zero against a nonzero reference
has cosine 0.
"""
import argparse
import sys

import torch
from safetensors import safe_open


def load(path):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k).double() for k in f.keys()}, f.metadata() or {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--loss-tol", type=float, default=None)
    ap.add_argument("--min-cos", type=float, default=0.0)
    a = ap.parse_args()
    A, ma = load(a.ours)
    B, mb = load(a.ref)
    la, lb = float(ma["loss"]), float(mb["loss"])
    bad = 0
    print(f"loss ours {la:.7f} ref {lb:.7f} rel {abs(la - lb) / abs(lb):.2e}")
    loss_tol = a.tol if a.loss_tol is None else a.loss_tol
    if not abs(la - lb) / abs(lb) <= loss_tol:
        print(f"loss differs by more than {loss_tol:g}  <-- FAIL")
        bad += 1
    print(f"{'tensor':40s} {'rel max err':>12s} {'rel L2':>10s} {'cosine':>10s} {'|ref|max':>10s}")
    for k in B:
        if k not in A:
            print(f"{k:40s} missing in ours")
            bad += 1
            continue
        x, y = A[k].flatten(), B[k].flatten()
        scale = y.abs().max().item()
        rel = (x - y).abs().max().item() / scale if scale > 0 else (x - y).abs().max().item()
        if scale == 0:
            cos = float("nan")
        elif x.norm() == 0:
            cos = 0.0
        else:
            cos = (torch.dot(x, y) / (x.norm() * y.norm())).item()
        l2 = ((x - y).norm() / y.norm()).item() if scale > 0 else (x - y).norm().item()
        flag = "" if rel <= a.tol and not (cos < a.min_cos) else "  <-- FAIL"
        bad += flag != ""
        print(f"{k:40s} {rel:12.3e} {l2:10.3e} {cos:10.6f} {scale:10.3e}{flag}")
    print("ok" if not bad else f"{bad} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
