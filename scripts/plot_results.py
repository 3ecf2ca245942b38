#!/usr/bin/env python3
"""Plots for docs/RESULTS.md from `mnemo eval` JSON lines and `mnemo train` logs.

usage: plot_results.py OUTDIR [--ppl ppl.jsonl] [--passkey passkey.jsonl] [--train stage1.log [--train stage2.log]]
                      [--train-beacon beacon.log]

  ppl      perplexity vs context length, one line per mode (same scored tokens; mean NLL over books)
  passkey  a length x depth heatmap of exact-digit accuracy per mode
  train    training loss (moving mean) and validation loss against the no-memory baseline
Needs matplotlib (run through .cache/venv, which scripts/plot.sh sets up).
"""
import argparse
import collections
import json
import math
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path, task):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("task") == task:
                    out.append(r)
    return out


def label(r):
    return r["mode"] + (":" + r["adapter"] if r.get("adapter") else "")


def plot_ppl(path, outdir):
    acc = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows(path, "ppl"):
        acc[label(r)][r["length"]].append(r["nll"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, by_len in sorted(acc.items()):
        xs = sorted(by_len)
        ax.plot(xs, [math.exp(sum(by_len[x]) / len(by_len[x])) for x in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens; the last 1,024 are scored)")
    ax.set_ylabel("perplexity on the scored tokens")
    ax.set_title("Same scored tokens, growing context")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "ppl_vs_length.png"), dpi=120)


def plot_passkey(path, outdir):
    data = rows(path, "passkey")
    modes = sorted({label(r) for r in data})
    if not modes:
        return
    lengths = sorted({r["length"] for r in data})
    depths = sorted({r["depth"] for r in data})
    fig, axes = plt.subplots(1, len(modes), figsize=(3.2 * len(modes), 3.2), squeeze=False)
    for ax, m in zip(axes[0], modes):
        grid = [[float("nan")] * len(lengths) for _ in depths]
        for r in data:
            if label(r) == m:
                grid[depths.index(r["depth"])][lengths.index(r["length"])] = r["accuracy"]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(lengths)), [str(x) for x in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [str(d) for d in depths], fontsize=7)
        ax.set_xlabel("length")
        ax.set_ylabel("depth %")
        ax.set_title(m, fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(os.path.join(outdir, "passkey_heatmap.png"), dpi=120)


def plot_train(paths, outdir, name="training_uio.png", xlabel=None):
    """One curve over the stages' logs in order; a stage's steps continue the
    previous one's; a step logged twice (a resumed run repeats the steps after
    its checkpoint) counts once, its last occurrence."""
    step_re = re.compile(r"step\s+(\d+)/\d+\s+ratio\s+(\d+)\s+loss\s+([\d.]+)\s+val\s+([\d.]+|-)")
    base_re = re.compile(r"no memory.*: ([\d.]+)")
    loss_at, val_at, bases, bounds, offset = {}, {}, [], [], 0
    for path in paths:
        last_val, top, base = None, 0, None
        with open(path) as f:
            for line in f:
                b = base_re.search(line)
                if b:
                    base = float(b.group(1))  # each stage's own baseline (its windows may differ)
                m = step_re.search(line)
                if not m:
                    continue
                s = int(m.group(1))
                top = max(top, s)
                loss_at[offset + s] = float(m.group(3))
                if m.group(4) != "-" and m.group(4) != last_val:
                    val_at[offset + s] = float(m.group(4))
                    last_val = m.group(4)
        bases.append((offset, offset + top, base))
        offset += top
        bounds.append(offset)
    if not loss_at:
        return
    steps = sorted(loss_at)
    loss = [loss_at[s] for s in steps]
    vsteps = sorted(val_at)
    vals = [val_at[s] for s in vsteps]
    k = 10
    mov = [sum(loss[max(0, i - k + 1):i + 1]) / (i - max(0, i - k + 1) + 1) for i in range(len(loss))]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(steps, loss, color="0.8", lw=0.8, label="training loss (per step)")
    ax.plot(steps, mov, color="C0", label=f"training loss ({k}-step mean)")
    ax.plot(vsteps, vals, "o-", color="C1", label="validation loss (memory)")
    labelled = False
    for x0, x1, base in bases:
        if base is not None:
            ax.hlines(base, x0, x1, color="C3", ls="--",
                      label=None if labelled else "validation, no memory (sinks + recent window)")
            labelled = True
    for b in bounds[:-1]:
        ax.axvline(b, color="0.5", ls=":", lw=1)
        ax.text(b, ax.get_ylim()[1], " next stage", fontsize=7, va="top", color="0.4")
    if xlabel is None:
        xlabel = ("step (windows of 1,280 tokens in stages 1-2, 2,048 in stage 3)" if len(paths) > 2
                  else "step (1,280-token windows)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, name), dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--ppl")
    ap.add_argument("--passkey")
    ap.add_argument("--train", action="append", help="a stage's log; repeat for later stages, in order")
    ap.add_argument("--train-beacon", help="the beacon adapter's training log")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    if a.ppl:
        plot_ppl(a.ppl, a.outdir)
    if a.passkey:
        plot_passkey(a.passkey, a.outdir)
    if a.train:
        plot_train(a.train, a.outdir)
    if a.train_beacon:
        plot_train([a.train_beacon], a.outdir, "training_beacon.png",
                   "step (2,048-token windows, ratios 2-32 drawn per step)")


if __name__ == "__main__":
    main()
