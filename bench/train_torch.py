#!/usr/bin/env python3
"""PyTorch training baseline for bench/train.sh: the same frozen model, read from the same GGUF file
(transformers dequantises it), a LoRA of the same rank and scale (64, alpha 256) on the same
projections (q and v: UIO's encoder LoRA), trained with PyTorch on the CPU with the same thread count
on windows of the same length (1,024 tokens of data/train/books), next-token loss, AdamW. Prints a
markdown row per precision (f32, and bf16 autocast where the CPU has bf16) with tokens/s and the
GFLOP per token of the step (6 x parameters for the linear layers, forward and backward, plus
attention), so it reads next to bench/train.sh's rows.

What differs from mnemo's UIO step, on purpose: this is the plain LoRA language-model step, one
forward and backward per token; mnemo's step runs an encoder pass with the LoRA and a decoder pass
reading the memory, about the same FLOPs per window token (bench/train.sh prints them). So the fair
comparison is tokens/s at about equal GFLOP/token, and GFLOP/s.

Sets itself up: without torch/peft/transformers/gguf it makes a virtual environment in
.cache/torchvenv, installs them from PyPI and runs again there.

Usage: python3 bench/train_torch.py [--threads N] [--steps S] [--window T]
"""
import argparse
import glob
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".cache", "torchvenv")
MODEL_DIR = os.path.join(ROOT, "models")
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_deps():
    try:
        import gguf  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.executable) == os.path.abspath(py):
        sys.exit("train_torch: torch, peft, transformers or gguf still missing in " + VENV)
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([py, "-m", "pip", "install", "-q", "torch", "peft", "transformers", "gguf"])
    os.execv(py, [py] + sys.argv)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--window", type=int, default=1024)
    args = ap.parse_args()
    ensure_deps()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's progress bars
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE)
    text = ""
    for path in sorted(glob.glob(os.path.join(ROOT, "data", "train", "books", "*.txt"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text += f.read(200000)
        if len(text) > 40 * args.window * (args.steps + 1):
            break
    ids = tok(text, return_tensors="pt").input_ids[0]
    need = args.window * (args.steps + 1)
    if ids.numel() < need:
        sys.exit(f"train_torch: {ids.numel()} tokens of training text, {need} needed")
    cpu_bf16 = hasattr(torch.backends, "cpu") and "avx512_bf16" in open("/proc/cpuinfo").read()
    print(f"torch {torch.__version__}, {args.threads} threads, windows of {args.window} tokens, "
          f"LoRA rank 64 alpha 256 on q_proj, v_proj")
    print("| engine | precision | tokens/s | GFLOP/token | GFLOP/s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for prec in ["f32", "bf16"] if cpu_bf16 else ["f32"]:
        model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE, dtype=torch.float32)
        cfg = model.config
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=256, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        n_lin = sum(m.weight.numel() for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and "lora_" not in name)
        T = args.window
        # linear layers 6 N per token (forward 2N, backward 4N: the frozen weights still pass
        # gradients to activations); attention: QK^T and PV, causal half, x3 for the backward
        attn = 3 * 2 * 2 * cfg.num_hidden_layers * cfg.hidden_size * T / 2
        gf_tok = (6 * n_lin + attn) / 1e9
        times = []
        for step in range(args.steps + 1):
            x = ids[step * T:(step + 1) * T].unsqueeze(0)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        dt = sum(times[1:]) / args.steps  # the first step also warms up
        rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) // 1024
        print(f"| pytorch + peft | {prec} | {T / dt:.0f} | {gf_tok:.2f} | {gf_tok * T / dt:.1f} | {rss} |")
        del model, opt


if __name__ == "__main__":
    main()
