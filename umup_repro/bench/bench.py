"""`umup-repro bench`: what our training costs, printed, not asserted.

1. forward+backward time of each parametrization on one random batch (medians over `repeats`
   after two warm-up passes; the parametrizations take turns pass by pass): the cost of u-μP's
   unit-scaled ops (custom autograd functions, extra scale multiplications) and of simulated FP8.
2. training step, plain PyTorch loop vs our Lightning run, on the same model, optimizer, schedule
   and batches: the plain loop is batch → loss → zero_grad → backward → optimizer step → scheduler
   step → loss.item(); the Lightning run is `umup_repro.training.train.run_cell` itself (the Trainer and
   module a cell runs, RMS/validation/checkpoints pushed outside the timed steps). A step's time is
   the interval between consecutive step ends (data fetching included); the first
   `--warmup-steps` of each run are dropped; runs alternate plain/Lightning `--rounds` times and
   the median over all kept steps is reported. Also u-μP vs SP per training step (plain loop).
3. throughput (on a GPU, or with `--throughput`): tokens/s and MFU of a training step in bf16
   autocast, for SP, u-μP and u-μP-FP8 at `--gpu-width` (default 1024); MFU against the device's
   dense bf16 peak (`umup_repro.training.provenance.PEAK_BF16_FLOPS`), FP8 included, so MFUs compare directly.
   Eager by default, as training runs; `--compile` compiles the loss with torch.compile, but on
   CUDA with torch 2.11 compiled u-μP gets wrong q/k gradients in bf16 autocast (tests/test_gpu.py),
   so its compiled times are of a wrong computation.
Times depend on this process's device and thread settings, and on the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

import torch

from umup_repro.core.config import PARAMETRIZATIONS, resolve_config
from umup_repro.model.decoder import build_model


def time_forward_backward(
    parametrizations: list[str],
    *,
    width: int,
    depth: int,
    batch_size: int,
    seq_len: int,
    repeats: int,
    device: str = "cpu",
) -> dict[str, float]:
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


# --------------------------------------------------------------------------------------------
# Plain loop vs Lightning


def step_config(
    parametrization: str, *, width: int, depth: int, batch_size: int, seq_len: int, steps: int, precision: str = "32"
):
    """A cell config whose logging (RMS at step 0, validation at 0 and at the end) and checkpoints
    fall outside the timed steps."""
    never = steps + 1
    return resolve_config(
        {
            "parametrization": parametrization,
            "model": {"width": width, "depth": depth, "seq_len": seq_len},
            "train": {
                "steps": steps,
                "batch_size": batch_size,
                "warmup": 5,
                "checkpoint_every": never,
                "precision": precision,
            },
            "log": {"rms_every": never, "val_every": never},
        }
    )


def plain_step_times(config, tokens, *, device: str = "cpu", compile: bool = False) -> list[float]:
    """Seconds per training step of a plain PyTorch loop (interval between step ends)."""
    from umup_repro.data import train_batch
    from umup_repro.model.optim import build_optimizer, build_scheduler

    t, m = config.train, config.model
    torch.manual_seed(t.seed)
    model = build_model(config).to(device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    loss_fn = torch.compile(model.loss) if compile else model.loss
    bf16 = t.precision == "bf16-mixed"

    def autocast():
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    ends = [time.perf_counter()]
    for step in range(t.steps):
        batch = train_batch(tokens, seed=t.seed, step=step, batch_size=t.batch_size, seq_len=m.seq_len)
        batch = batch.to(device, non_blocking=True)
        with autocast():
            loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        loss.item()  # a real loop looks at its loss; on a GPU this is the step's sync
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends, ends[1:])]


def lightning_step_times(config, tokens) -> list[float]:
    """Seconds per training step of our Lightning run (`run_cell`), in a temporary run folder."""
    import lightning as L

    from umup_repro.training.train import run_cell

    class StepTimer(L.Callback):
        def __init__(self):
            self.ends: list[float] = []

        def on_train_start(self, trainer, pl_module):
            self.ends.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        code = run_cell(config, os.path.join(tmp, "cell"), progress="none", callbacks=[timer], tokens=tokens)
    if code != 0:
        raise RuntimeError(f"benchmark run failed with exit code {code}")
    return [b - a for a, b in zip(timer.ends, timer.ends[1:])]


def compare_loops(
    *, width: int, depth: int, batch_size: int, seq_len: int, steps: int, warmup: int, rounds: int
) -> dict[str, float]:
    """Median step seconds: u-μP plain, u-μP Lightning, SP plain (runs alternate `rounds` times)."""
    from umup_repro.data import token_arrays

    shape = dict(width=width, depth=depth, batch_size=batch_size, seq_len=seq_len, steps=warmup + steps)
    umup, sp = step_config("umup", **shape), step_config("sp", **shape)
    tokens = token_arrays(umup)
    times: dict[str, list[float]] = {"umup plain": [], "umup lightning": [], "sp plain": []}
    for _ in range(rounds):
        times["umup plain"] += plain_step_times(umup, tokens["train"])[warmup:]
        times["umup lightning"] += lightning_step_times(umup, tokens)[warmup:]
        times["sp plain"] += plain_step_times(sp, tokens["train"])[warmup:]
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------------------------
# Throughput


def throughput(
    parametrizations: list[str],
    *,
    width: int,
    depth: int,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    device: str,
    compile: bool,
) -> dict[str, dict[str, float]]:
    """tokens/s and MFU (bf16 autocast, optionally compiled) per parametrization, plain loop."""
    from umup_repro.core.compute import flops_per_token
    from umup_repro.data import token_arrays
    from umup_repro.training.provenance import peak_flops

    if compile:  # u-μP's blocks differ in their residual weights (Python floats): a graph per block
        cfg = torch._dynamo.config
        limit = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
        setattr(cfg, limit, max(getattr(cfg, limit), 4 * depth + 8))
    out = {}
    for p in parametrizations:
        config = step_config(
            p,
            width=width,
            depth=depth,
            batch_size=batch_size,
            seq_len=seq_len,
            steps=warmup + steps,
            precision="bf16-mixed",
        )
        tokens = token_arrays(config)["train"]
        step_s = statistics.median(plain_step_times(config, tokens, device=device, compile=compile)[warmup:])
        tps = batch_size * seq_len / step_s
        peak = peak_flops(torch.device(device))
        mfu = tps * flops_per_token(config) / peak if peak else float("nan")
        out[p] = {"step_s": step_s, "tokens_per_s": tps, "mfu": mfu}
        if compile:
            torch._dynamo.reset()
    return out


def main(args: argparse.Namespace) -> int:
    import warnings

    # ops' scale helpers are lru_cached pure functions of Python numbers: tracing through is fine
    warnings.filterwarnings("ignore", message=".*functools.lru_cache.*")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if os.environ.get("HF_HUB_OFFLINE") is None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the default corpus is offline; never reach for the hub
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    shape = dict(width=args.width, depth=args.depth, batch_size=args.batch_size, seq_len=args.seq_len)
    print(
        f"umup-repro bench: {device}, threads={torch.get_num_threads()}{load}; width={args.width}"
        f" depth={args.depth} batch={args.batch_size}x{args.seq_len}"
    )

    print(f"forward+backward, median of {args.repeats}:")
    times = time_forward_backward(list(PARAMETRIZATIONS), repeats=args.repeats, device=device, **shape)
    for p, t in times.items():
        print(f"  {p:9s} {t * 1e3:8.1f} ms   ratio to SP {t / times['sp']:.3f}")

    if args.steps > 0:
        print(
            f"training step (fp32, CPU/1 device), median of {args.rounds} x {args.steps} steps after"
            f" {args.warmup_steps} warm-up steps per run:"
        )
        loops = compare_loops(steps=args.steps, warmup=args.warmup_steps, rounds=args.rounds, **shape)
        for k, t in loops.items():
            print(f"  {k:15s} {t * 1e3:8.1f} ms")
        print(f"  Lightning / plain loop (u-muP): {loops['umup lightning'] / loops['umup plain']:.3f}")
        print(f"  u-muP / SP (plain loop step):   {loops['umup plain'] / loops['sp plain']:.3f}")
        print(f"  u-muP / SP (forward+backward):  {times['umup'] / times['sp']:.3f}")

    if args.throughput or (args.throughput is None and device == "cuda"):
        what = "compiled" if args.compile else "eager"
        print(
            f"throughput ({what}, bf16 autocast), width={args.gpu_width} depth={args.gpu_depth}"
            f" batch={args.gpu_batch_size}x{args.gpu_seq_len}, median of {args.steps or 20} steps:"
        )
        res = throughput(
            ["sp", "umup", "umup_fp8"],
            width=args.gpu_width,
            depth=args.gpu_depth,
            batch_size=args.gpu_batch_size,
            seq_len=args.gpu_seq_len,
            steps=args.steps or 20,
            warmup=max(args.warmup_steps, 3),
            device=device,
            compile=args.compile,
        )
        for p, r in res.items():
            print(f"  {p:9s} {r['step_s'] * 1e3:8.1f} ms/step  {r['tokens_per_s']:12,.0f} tok/s  MFU {r['mfu']:.3f}")
        print(f"  u-muP / SP step time: {res['umup']['step_s'] / res['sp']['step_s']:.3f}")
        print(f"  FP8 / bf16 speed: {res['umup']['step_s'] / res['umup_fp8']['step_s']:.3f} (above 1: FP8 faster)")
    return 0
