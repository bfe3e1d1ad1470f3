"""`umup-repro bench`: forward+backward time of each parametrization, printed, not asserted.

Times are medians over `repeats` after two warm-up passes, on the same random token batch, in
this process's device and thread settings. The ratio to SP is the cost of u-μP's unit-scaled ops
(custom autograd functions, extra scale multiplications) and of simulated FP8 casts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from umup_repro.config import resolve_config
from umup_repro.model import build_model


def time_forward_backward(parametrizations: list[str], *, width: int, depth: int, batch_size: int,
                          seq_len: int, repeats: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds of one forward+backward pass per parametrization.

    The parametrizations take turns pass by pass, so background load biases none of them.
    """
    models, batch = {}, None
    for p in parametrizations:
        config = resolve_config({"parametrization": p, "model": {"width": width, "depth": depth, "seq_len": seq_len}})
        torch.manual_seed(0)
        models[p] = build_model(config).to(device)
        batch = torch.randint(0, config.model.vocab_size, (batch_size, seq_len + 1), device=device)
    times: dict[str, list[float]] = {p: [] for p in parametrizations}
    for i in range(repeats + 2):
        for p, model in models.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            model.loss(batch).backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 2:
                times[p].append(time.perf_counter() - start)
    return {p: statistics.median(t) for p, t in times.items()}


def main(args: argparse.Namespace) -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = dict(width=args.width, depth=args.depth, batch_size=args.batch_size, seq_len=args.seq_len)
    print(f"forward+backward, {device}, threads={torch.get_num_threads()}, width={args.width} "
          f"depth={args.depth} batch={args.batch_size}x{args.seq_len}, median of {args.repeats}")
    times = time_forward_backward(["sp", "mup", "umup", "umup_fp8"], repeats=args.repeats, device=device, **shape)
    for p, t in times.items():
        print(f"  {p:9s} {t * 1e3:8.1f} ms   ratio to SP {t / times['sp']:.3f}")
    return 0
