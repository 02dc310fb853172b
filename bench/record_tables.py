#!/usr/bin/env python3
"""record_tables.py - the markdown tables of bench/train_gpu.sh and bench/time-to-loss.sh,
from the JSON lines of gpt-train and tools/record_run.py (standard library only, so the
tables can be remade anywhere from fetched logs).

    python3 bench/record_tables.py train-gpu GPT.jsonl TORCH.jsonl [--skip K] [--smi GPT.csv TORCH.csv]
    python3 bench/record_tables.py time-to-loss GPT.jsonl TORCH.jsonl [--reference]
    python3 bench/record_tables.py curve LOG.jsonl
    python3 bench/record_tables.py ops OPS.jsonl
    python3 bench/record_tables.py gpus GPT.jsonl TORCH.jsonl --gpus G [--one-gpu DIR] [--skip K]
    python3 bench/record_tables.py kernels NCU.csv [--start REGEX] [--micro N]

Either log may be missing (its columns then read "-").

train-gpu: gpt-train's train records are grouped into runs of one window (in order);
the first K of each run (default 3: start-up, compilation) are left out; the median
step_ms of the rest is compared with record_run.py's segment records (same rule).
tokens/s = tokens per step / median; MFU per spec 12 (tools/flops.py: 6N + attention
with the mask-level L of the window, no document boundaries, 989.4 TFLOP/s peak).
Peak memory: gpt-train's peak_bytes (the engine's own allocations: model, gradients,
optimizer state, activations), PyTorch's torch.cuda.max_memory_allocated per window
(and max_memory_reserved). --smi: nvidia-smi samples taken while each side ran
(timestamp, SM MHz, power W, power limit W, clock-event reasons; bench/train_gpu.sh
writes them): for the samples drawing at least 40% of the limit (the GPU at work), the
median SM clock and power, and how many had the software power cap (reason bit 0x4)
or a hardware slowdown (0x8, 0x40, 0x80) holding the clock back.

time-to-loss: the validation curve of each log, step by step, and the training times:
all steps (train_time_ms: evaluations excluded), steps 10.. (spec 11: the record's
clock restarts at step 10, so compilation and warm-up are not counted), and the median
step. --reference adds the PyTorch run measured elsewhere on one H200 (300 steps,
validation every 50 steps on 1,179,648 tokens; its 312.9 s are the record's clock, from
step 10). The ratios under the table compare training times from step 10 (PyTorch's
own record clock when its log has one).

curve: one log's validation curve and training times (pipelines/speedrun-short.sh).

ops: record_run.py --mode ops's records, one row per window and operation.

gpus (bench/speedrun-gpus.sh): gpt-train --gpus G beside the record's code under torchrun
on G GPUs, both over the record's schedule. ms/step of the window-1, 7 and 14 phases:
the median step_ms of the train records whose window is 1, 7, 14, from step K on
(default 10: the record's clock starts at step 10, so compilation is left out); training
time per spec 11 (sum of step_ms of steps 10.., and all steps; the record's own clock
for PyTorch); the validation curves side by side; peak memory per GPU (gpt-train's
end record; PyTorch's max_memory_allocated of each rank, the largest shown). With
--one-gpu DIR (bench/train_gpu.sh's results: gpt.jsonl, torch.jsonl with the windows
held) the one-GPU medians per window and the scaling efficiency t1 / (G x tG).

kernels (bench/step_kernels.sh): Nsight Compute's CSV (--csv, metrics gpu__time_duration,
dram__bytes_read, dram__bytes_write) of a training step; the launches from the first
kernel whose name matches --start (default rmsnorm_fwd_kernel, the first of each of
gpt-train's micro-batches) up to the next such launch, summed per kernel name (template
arguments kept, parameters dropped): launches, median us per launch, ms per micro-batch
and per step of --micro micro-batches (default 8), share of the micro-batch, DRAM TB/s.
"""
import argparse
import csv
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import flops  # noqa: E402

REFERENCE = {"label": "PyTorch reference (one H200, measured elsewhere)",
             "val": {50: 4.5179, 100: 4.1588, 150: 3.9314, 200: 3.7002, 250: 3.5885, 300: 3.5532},
             "train_s": 312.9}


def load(path):
    recs = []
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                recs.append(json.loads(line))
            except ValueError:
                print(f"record_tables.py: {path}:{n}: not JSON, skipped", file=sys.stderr)
    return recs


def fmt(x, spec):
    """x formatted by spec ('.1f%': '.1f' then a percent sign), or '-' for None."""
    if x is None:
        return "-"
    if spec.endswith("%"):
        return format(x, spec[:-1]) + "%"
    return format(x, spec)


def runs_by_window(train):
    """Consecutive train records with the same window: [(window, [records])]."""
    out = []
    for r in train:
        if out and out[-1][0] == r.get("window"):
            out[-1][1].append(r)
        else:
            out.append((r.get("window"), [r]))
    return out


def med(xs):
    return statistics.median(xs) if xs else None


def smi_summary(path):
    """nvidia-smi's samples of one run, summarised over those at work; None without any."""
    if not path or not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            p = [x.strip() for x in line.split(",")]
            if len(p) < 5:
                continue
            try:
                mhz, w, lim = float(p[1]), float(p[2]), float(p[3])
                why = int(p[4], 16)
            except ValueError:
                continue
            rows.append((mhz, w, lim, why))
    if not rows:
        return None
    busy = [r for r in rows if r[2] > 0 and r[1] >= 0.4 * r[2]]
    out = {"samples": len(rows), "busy": len(busy), "limit": rows[-1][2]}
    if busy:
        out.update(mhz=med([r[0] for r in busy]), mhz_min=min(r[0] for r in busy),
                   mhz_max=max(r[0] for r in busy), watts=med([r[1] for r in busy]),
                   capped=sum(1 for r in busy if r[3] & 0x4) / len(busy),
                   hw=sum(1 for r in busy if r[3] & (0x8 | 0x40 | 0x80)) / len(busy))
    return out


def smi_line(name, path):
    s = smi_summary(path)
    if s is None:
        return None
    if not s["busy"]:
        return f"GPU while {name} ran: {s['samples']} samples, none at work (>= 40% of the {s['limit']:.0f} W limit)."
    hw = f", a hardware slowdown in {100 * s['hw']:.0f}%" if s["hw"] else ""
    return (f"GPU while {name} ran ({s['busy']} of {s['samples']} samples at work, every 100 ms): SM clock median "
            f"{s['mhz']:.0f} MHz ({s['mhz_min']:.0f}-{s['mhz_max']:.0f}), power median {s['watts']:.0f} W of "
            f"{s['limit']:.0f} W; power cap holding the clock in {100 * s['capped']:.0f}% of them"
            f"{hw}.")


def train_gpu(a):
    g = load(a.gpt)
    t = load(a.torch)
    rows = {}
    order = []
    gpt_peak = gpt_dev = None
    if g:
        for w, recs in runs_by_window([r for r in g if r.get("type") == "train"]):
            steady = recs[a.skip:]
            if w not in rows:
                order.append(w)
            rows.setdefault(w, {})["gpt"] = {
                "ms": med([r["step_ms"] for r in steady]),
                "tokens": recs[0].get("tokens"),
                "split": {k: med([r["ms"][k] for r in steady if "ms" in r]) for k in ("data", "fwd_bwd", "optim")},
                "n": len(steady)}
        ends = [r for r in g if r.get("type") == "end"]
        if ends:
            gpt_peak, gpt_dev = ends[-1].get("peak_bytes"), ends[-1].get("device")
    torch_info = None
    if t:
        for s in (r for r in t if r.get("type") == "segment"):
            w = s.get("window")
            if w not in rows:
                order.append(w)
            rows.setdefault(w, {})["torch"] = {"ms": s.get("median_step_ms"), "peak": s.get("peak_bytes"),
                                               "resv": s.get("peak_reserved_bytes"),
                                               "n": s.get("steps", 0) - a.skip}
        ends = [r for r in t if r.get("type") == "end"]
        if ends:
            torch_info = ends[-1]
    tokens = 8 * 65536
    for w in order:
        gt = rows[w].get("gpt", {}).get("tokens")
        if gt:
            tokens = gt
    print(f"Record configuration, {tokens:,} tokens per step (8 x 65,536), median step time after "
          f"the first {a.skip} steps of each window; MFU per spec 12 (tools/flops.py, peak "
          f"{flops.peak_tflops():.1f} TFLOP/s).\n")
    print("| W | FLOPs/token | gpt-train ms/step | PyTorch ms/step | gpt-train / PyTorch | gpt-train tok/s | "
          "PyTorch tok/s | gpt-train MFU | PyTorch MFU | gpt-train peak GB | PyTorch peak GB (reserved) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in order:
        r = rows[w]
        gm = r.get("gpt", {}).get("ms")
        tm = r.get("torch", {}).get("ms")
        fpt = flops.flops_per_token(w) if isinstance(w, int) else None

        def rate(ms):
            return tokens / (ms / 1e3) if ms else None

        def mfu(ms):
            if not ms or fpt is None:
                return None
            return flops.flops_report(window=w, tokens=tokens, ms=ms)["mfu"] * 100
        tp = r.get("torch", {})
        peak_t = "-" if tp.get("peak") is None else f"{tp['peak'] / 1e9:.2f} ({(tp.get('resv') or 0) / 1e9:.2f})"
        print(f"| {w if w is not None else 'schedule'} | {fmt(fpt / 1e6 if fpt else None, '.1f')}M | {fmt(gm, '.1f')} | "
              f"{fmt(tm, '.1f')} | {fmt(gm / tm if gm and tm else None, '.3f')} | {fmt(rate(gm), ',.0f')} | "
              f"{fmt(rate(tm), ',.0f')} | {fmt(mfu(gm), '.1f%')} | {fmt(mfu(tm), '.1f%')} | "
              f"{fmt(gpt_peak / 1e9 if gpt_peak else None, '.2f')} | {peak_t} |")
    splits = [(w, rows[w]["gpt"]["split"]) for w in order if "gpt" in rows[w]]
    if splits:
        print("\ngpt-train's step split (medians, ms): " + "; ".join(
            f"W={w}: data {fmt(s['data'], '.1f')}, fwd+bwd {fmt(s['fwd_bwd'], '.1f')}, optim {fmt(s['optim'], '.1f')}"
            for w, s in splits))
    if gpt_dev:
        print(f"gpt-train device: {gpt_dev}; peak_bytes is the engine's own allocation.")
    if torch_info:
        print(f"PyTorch: {torch_info.get('torch')} on {torch_info.get('device')}, the record's code "
              f"(sha256 {str(torch_info.get('record_sha256'))[:12]}...), norm eps {torch_info.get('norm_eps')}; "
              f"first steps {', '.join(f'{x / 1e3:.1f}' for x in torch_info.get('first_steps_ms') or [])} s "
              f"(torch.compile).")
    for name, path in zip(("gpt-train", "PyTorch"), a.smi or ()):
        line = smi_line(name, path)
        if line:
            print(line)
    return 0


def curve(recs):
    if not recs:
        return {}, {}
    val = {r["step"]: r["val_loss"] for r in recs if r.get("type") == "val"}
    train = [r for r in recs if r.get("type") == "train"]
    end = next((r for r in reversed(recs) if r.get("type") == "end"), {})
    ms = [r["step_ms"] for r in train]
    late = [r["step_ms"] for r in train if r["step"] >= 10]
    info = {"steps": len(train), "all_s": sum(ms) / 1e3 if ms else None,
            "from10_s": sum(late) / 1e3 if late else None, "median_ms": med(late),
            "first_s": [x / 1e3 for x in ms[:3]], "record_clock_s": end.get("record_time_ms", None),
            "end": end}
    if info["record_clock_s"] is not None:
        info["record_clock_s"] /= 1e3
    return val, info


def time_to_loss(a):
    gv, gi = curve(load(a.gpt))
    tv, ti = curve(load(a.torch))
    ref = REFERENCE if a.reference else None
    steps = sorted(set(gv) | set(tv) | (set(ref["val"]) if ref else set()))
    cols = ["gpt-train", "PyTorch (record code)"] + (["reference"] if ref else [])
    print("| step | " + " | ".join(f"{c} val" for c in cols) + " | gpt-train - PyTorch |")
    print("| ---: |" + " ---: |" * (len(cols) + 1))
    for s in steps:
        g, t = gv.get(s), tv.get(s)
        cells = [fmt(g, ".4f"), fmt(t, ".4f")] + ([fmt(ref["val"].get(s), ".4f")] if ref else [])
        print(f"| {s} | " + " | ".join(cells) + f" | {fmt(g - t if g is not None and t is not None else None, '+.4f')} |")
    print()
    print("| | steps | training time, all steps (s) | steps 10.. (s, spec 11) | median ms/step (10..) | first steps (s) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, i in (("gpt-train", gi), ("PyTorch (record code)", ti)):
        if not i:
            print(f"| {name} | - | - | - | - | - |")
            continue
        extra = f" (record's clock {i['record_clock_s']:.1f})" if i.get("record_clock_s") is not None else ""
        print(f"| {name} | {i['steps']} | {fmt(i['all_s'], '.1f')} | {fmt(i['from10_s'], '.1f')}{extra} | "
              f"{fmt(i['median_ms'], '.1f')} | {', '.join(f'{x:.1f}' for x in i['first_s'])} |")
    if ref:
        print(f"| {ref['label']} | 300 | - | {ref['train_s']} (the record's clock, as reported) | - | - |")
    # the record's clock starts at step 10: compare on that footing
    g10 = gi.get("from10_s") if gi else None
    t10 = (ti.get("record_clock_s") or ti.get("from10_s")) if ti else None
    ratios = []
    if g10 and t10:
        ratios.append(f"gpt-train / PyTorch, training time from step 10: {g10 / t10:.3f}")
    if g10 and ref:
        ratios.append(f"gpt-train / the reference, training time from step 10: {g10 / ref['train_s']:.3f}")
    if ratios:
        print("\n" + "\n".join(ratios))
    return 0


def one_curve(a):
    recs = load(a.log)
    if recs is None:
        print(f"record_tables.py: {a.log}: no such file", file=sys.stderr)
        return 1
    val, i = curve(recs)
    if not val and not i["steps"]:
        print(f"record_tables.py: {a.log}: no train or val records", file=sys.stderr)
        return 1
    vrec = {r["step"]: r for r in recs if r.get("type") == "val"}
    print("| step | val_loss | training time so far (s) |")
    print("| ---: | ---: | ---: |")
    for s in sorted(val):
        t = vrec[s].get("train_time_ms")
        print(f"| {s} | {fmt(val[s], '.4f')} | {fmt(t / 1e3 if t is not None else None, '.1f')} |")
    print(f"\n{i['steps']} steps; training time {fmt(i['all_s'], '.1f')} s (all steps, evaluations excluded), "
          f"{fmt(i['from10_s'], '.1f')} s from step 10 on (spec 11); median step {fmt(i['median_ms'], '.1f')} ms; "
          f"first steps {', '.join(f'{x:.2f}' for x in i['first_s'])} s")
    return 0


def ops(a):
    recs = [r for r in (load(a.log) or []) if r.get("type") == "op"]
    if not recs:
        print(f"record_tables.py: {a.log}: no op records", file=sys.stderr)
        return 1
    print("| W | operation | ms (median) | min | TFLOP/s (mask-level L) | TFLOP/s (tile-level) | MFU | "
          "L mask / tile | peak GB (reserved) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in recs:
        lm, lt = r.get("L_mask"), r.get("L_tile")
        ls = "-" if lm is None else f"{lm:.1f} / {fmt(lt, '.1f')}"
        print(f"| {r.get('window')} | {r.get('op')} | {fmt(r.get('ms'), '.2f')} | {fmt(r.get('ms_min'), '.2f')} | "
              f"{fmt(r.get('tflops'), '.1f')} | {fmt(r.get('tflops_tile'), '.1f')} | "
              f"{fmt(r['mfu'] * 100 if r.get('mfu') is not None else None, '.1f%')} | {ls} | "
              f"{fmt(r['peak_bytes'] / 1e9 if r.get('peak_bytes') else None, '.2f')} "
              f"({fmt(r['peak_reserved_bytes'] / 1e9 if r.get('peak_reserved_bytes') else None, '.2f')}) |")
    return 0


def phase_ms(recs, skip):
    """{window: [step_ms of train records with that window and step >= skip]}."""
    out = {}
    for r in recs or []:
        if r.get("type") == "train" and r.get("step", 0) >= skip and r.get("step_ms") is not None:
            out.setdefault(r.get("window"), []).append(r["step_ms"])
    return out


def one_gpu(d, skip=3):
    """{window: (gpt-train median, PyTorch median)} of a bench/train_gpu.sh results directory."""
    out = {}
    g = load(os.path.join(d, "gpt.jsonl")) or []
    for w, recs in runs_by_window([r for r in g if r.get("type") == "train"]):
        out.setdefault(w, [None, None])[0] = med([r["step_ms"] for r in recs[skip:]])
    for s in (r for r in load(os.path.join(d, "torch.jsonl")) or [] if r.get("type") == "segment"):
        out.setdefault(s.get("window"), [None, None])[1] = s.get("median_step_ms")
    return out


def gpus(a):
    g, t = load(a.gpt), load(a.torch)
    if g is None and t is None:
        print(f"record_tables.py: neither {a.gpt} nor {a.torch} exists", file=sys.stderr)
        return 1
    G = a.gpus
    gp, tp = phase_ms(g, a.skip), phase_ms(t, a.skip)
    one = one_gpu(a.one_gpu) if a.one_gpu else {}
    gend = next((r for r in reversed(g or []) if r.get("type") == "end"), {})
    tend = next((r for r in reversed(t or []) if r.get("type") == "end"), {})
    print(f"{G} GPU(s), the record's schedule; ms/step: median over the steps of each window phase from step "
          f"{a.skip} on (n = steps counted).\n")
    head = "| W | n gpt / PyTorch | gpt-train ms/step | PyTorch ms/step | gpt-train / PyTorch |"
    if a.one_gpu:
        head += " 1-GPU gpt-train ms | 1-GPU PyTorch ms | gpt-train scaling | PyTorch scaling |"
    print(head)
    print("| ---: |" + " ---: |" * (head.count("|") - 2))
    for w in (1, 7, 14):
        gm, tm = med(gp.get(w, [])), med(tp.get(w, []))
        row = (f"| {w} | {len(gp.get(w, []))} / {len(tp.get(w, []))} | {fmt(gm, '.1f')} | {fmt(tm, '.1f')} | "
               f"{fmt(gm / tm if gm and tm else None, '.3f')} |")
        if a.one_gpu:
            o = one.get(w, [None, None])

            def eff(t1, tg):
                return 100 * t1 / (G * tg) if t1 and tg else None
            row += (f" {fmt(o[0], '.1f')} | {fmt(o[1], '.1f')} | {fmt(eff(o[0], gm), '.1f%')} | "
                    f"{fmt(eff(o[1], tm), '.1f%')} |")
        print(row)
    print()
    _, gi = curve(g)
    _, ti = curve(t)
    print("| | steps | training time, steps 10.. (s, spec 11) | all steps (s) | record's clock (s) | first steps (s) | "
          "peak GB per GPU |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for name, i, end in (("gpt-train", gi, gend), ("PyTorch (record code)", ti, tend)):
        if not i:
            print(f"| {name} | - | - | - | - | - | - |")
            continue
        if "peak_bytes_per_rank" in end:
            pk = max(end["peak_bytes_per_rank"] or [0]) / 1e9
            pr = max(end.get("peak_reserved_bytes_per_rank") or [0]) / 1e9
            peak = f"{pk:.2f} (max of {len(end['peak_bytes_per_rank'])} ranks; reserved {pr:.2f})"
        else:
            peak = fmt(end["peak_bytes"] / 1e9 if end.get("peak_bytes") else None, ".2f")
        print(f"| {name} | {i['steps']} | {fmt(i['from10_s'], '.1f')} | {fmt(i['all_s'], '.1f')} | "
              f"{fmt(i.get('record_clock_s'), '.1f')} | {', '.join(f'{x:.1f}' for x in i['first_s'])} | {peak} |")
    for name, end in (("gpt-train", gend), ("PyTorch", tend)):
        w = end.get("world", end.get("world_size"))
        if end and w is not None and w != G:
            print(f"\nwarning: {name}'s log ran on {w} rank(s), not {G}")
        if (g if name == "gpt-train" else t) and not end:
            print(f"\n{name}: no end record (stopped early?): times cover the steps logged")
    gv = {r["step"]: r for r in g or [] if r.get("type") == "val"}
    tv = {r["step"]: r for r in t or [] if r.get("type") == "val"}
    if gv or tv:
        print("\n| step | gpt-train val | PyTorch val | gpt-train - PyTorch | gpt-train time (s) | PyTorch time (s) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for s in sorted(set(gv) | set(tv)):
            gl, tl = gv.get(s, {}).get("val_loss"), tv.get(s, {}).get("val_loss")
            gt, tt = gv.get(s, {}).get("train_time_ms"), tv.get(s, {}).get("train_time_ms")
            print(f"| {s} | {fmt(gl, '.4f')} | {fmt(tl, '.4f')} | "
                  f"{fmt(gl - tl if gl is not None and tl is not None else None, '+.4f')} | "
                  f"{fmt(gt / 1e3 if gt is not None else None, '.1f')} | {fmt(tt / 1e3 if tt is not None else None, '.1f')} |")
    if tend:
        print(f"\nPyTorch: {tend.get('torch')} on {tend.get('device')}, the record's code "
              f"(sha256 {str(tend.get('record_sha256'))[:12]}...), norm eps {tend.get('norm_eps')}.")
    if gend.get("device"):
        print(f"gpt-train device: {gend['device']}; its peak_bytes is the engine's own allocation.")
    return 0


UNITS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
         "byte": 1.0, "B": 1.0, "Kbyte": 1e3, "KB": 1e3, "Mbyte": 1e6, "MB": 1e6, "Gbyte": 1e9, "GB": 1e9}


def ncu_launches(path):
    """[(name, us, dram bytes)] in launch order from ncu's CSV (other lines skipped)."""
    with open(path, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]
    by_id = {}
    for r in csv.DictReader(lines):
        try:
            i = int(r["ID"])
            v = float(r["Metric Value"].replace(",", "")) * UNITS[r["Metric Unit"]]
        except (KeyError, ValueError):
            continue
        d = by_id.setdefault(i, {"name": r["Kernel Name"], "us": 0.0, "bytes": 0.0})
        m = r["Metric Name"]
        if m.startswith("gpu__time_duration"):
            d["us"] = v
        elif m.startswith("dram__bytes"):
            d["bytes"] += v
    return [(d["name"], d["us"], d["bytes"]) for _, d in sorted(by_id.items())]


def kernel_name(full):
    n = re.sub(r"^void ", "", full)
    n = re.sub(r"<cub::.*", "<cub...>", n)
    depth, out = 0, []
    for ch in n:  # drop the parameter list, keep template arguments
        if ch == "(" and depth == 0 and out:
            break
        depth += ch == "<"
        depth -= ch == ">"
        out.append(ch)
    return "".join(out).strip()


def kernels(a):
    try:
        ls = ncu_launches(a.csv)
    except OSError as e:
        print(f"record_tables.py: {a.csv}: {e.strerror}", file=sys.stderr)
        return 1
    start = re.compile(a.start)
    marks = [i for i, (n, _, _) in enumerate(ls) if start.search(n)]
    if len(marks) < 2:
        print(f"record_tables.py: {a.csv}: {len(ls)} launches, {len(marks)} matching {a.start!r}: no whole "
              f"micro-batch (capture more launches)", file=sys.stderr)
        return 1
    mb = ls[marks[0]:marks[1]]
    agg = {}
    for n, us, by in mb:
        k = agg.setdefault(kernel_name(n), [[], 0.0])
        k[0].append(us)
        k[1] += by
    total = sum(us for _, us, _ in mb)
    print(f"{len(mb)} launches in one micro-batch (launches {marks[0]}..{marks[1] - 1} of {len(ls)}), "
          f"each timed alone: {total / 1e3:.2f} ms, x {a.micro} = {a.micro * total / 1e3:.1f} ms per step.\n")
    print("| kernel | launches | us each (median) | ms per micro-batch | ms per step | share | DRAM TB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (us, by) in sorted(agg.items(), key=lambda x: -sum(x[1][0])):
        t = sum(us)
        print(f"| `{name}` | {len(us)} | {med(us):.1f} | {t / 1e3:.3f} | {a.micro * t / 1e3:.1f} | "
              f"{100 * t / total:.1f}% | {by / (t * 1e-6) / 1e12 if t else 0:.2f} |")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("train-gpu")
    p.add_argument("gpt")
    p.add_argument("torch")
    p.add_argument("--skip", type=int, default=3)
    p.add_argument("--smi", nargs=2, metavar=("GPT_CSV", "TORCH_CSV"))
    p = sub.add_parser("time-to-loss")
    p.add_argument("gpt")
    p.add_argument("torch")
    p.add_argument("--reference", action="store_true")
    p = sub.add_parser("curve")
    p.add_argument("log")
    p = sub.add_parser("ops")
    p.add_argument("log")
    p = sub.add_parser("gpus")
    p.add_argument("gpt")
    p.add_argument("torch")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--one-gpu", metavar="DIR")
    p.add_argument("--skip", type=int, default=10)
    p = sub.add_parser("kernels")
    p.add_argument("csv")
    p.add_argument("--start", default="rmsnorm_fwd_kernel")
    p.add_argument("--micro", type=int, default=8)
    a = ap.parse_args(argv)
    if a.what == "kernels":
        return kernels(a)
    if a.what == "gpus":
        if a.gpus < 1:
            ap.error("--gpus must be >= 1")
        return gpus(a)
    if a.what == "train-gpu":
        return train_gpu(a)
    if a.what == "curve":
        return one_curve(a)
    if a.what == "ops":
        return ops(a)
    return time_to_loss(a)


if __name__ == "__main__":
    sys.exit(main())
