"""`umup-repro bench`: what our training costs, printed, not asserted.

1. forward+backward time of each parametrization on one random batch (medians over `repeats`
   after two warm-up passes; the parametrizations take turns pass by pass): the cost of u-μP's
   unit-scaled ops (custom autograd functions, extra scale multiplications) and of simulated FP8.
2. training step, plain PyTorch loops vs our Lightning run, on the same model, optimizer, schedule
   and batches: a plain loop is batch → loss → zero_grad → backward → optimizer step → scheduler
   step → loss.item(); the Lightning run is `umup_repro.training.train.run_cell` itself (the Trainer
   and module a cell runs). They take turns step by step (after each Lightning step, one u-μP and
   one SP plain step, from a callback), so load on a shared machine weighs on all alike; printed:
   median step times and the spread (median, quartiles, extremes) of the per-step ratios Lightning /
   plain and u-μP / SP, and the ratio of total times. First at the bench's shape, logging outside
   the timed steps; then a whole default cell of `--preset` (tiny, width 64) with its RMS probes,
   validation and checkpoints, which fall in the Lightning steps. `--warmup-steps` are dropped.
   The loops share one process, so its garbage collector and Lightning's global settings
   (deterministic algorithms) weigh on all of them; `umup-repro bench-cell` times a cell as its own process.
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


class PlainLoop:
    """A plain PyTorch training loop, one `step()` at a time: batch → loss → zero_grad → backward →
    (clip) → optimizer step → scheduler step → loss.item(). Stepped by the caller, so several loops
    (and a Lightning run) can take turns step by step."""

    def __init__(self, config, tokens, *, device: str = "cpu", compile: bool = False):
        from umup_repro.model.optim import build_optimizer, build_scheduler

        t = config.train
        torch.manual_seed(t.seed)
        self.config, self.tokens, self.device, self.step_index = config, tokens, device, 0
        self.model = build_model(config).to(device)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.loss_fn = torch.compile(self.model.loss) if compile else self.model.loss
        bf16 = t.precision == "bf16-mixed"
        dev = torch.device(device).type
        self.autocast = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step(self) -> None:
        from umup_repro.data import train_batch

        t, m = self.config.train, self.config.model
        batch = train_batch(self.tokens, seed=t.seed, step=self.step_index, batch_size=t.batch_size, seq_len=m.seq_len)
        batch = batch.to(self.device, non_blocking=True)
        with self.autocast():
            loss = self.loss_fn(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        loss.item()  # a real loop looks at its loss; on a GPU this is the step's sync
        self.step_index += 1


def plain_step_times(config, tokens, *, device: str = "cpu", compile: bool = False) -> list[float]:
    """Seconds per training step of a plain PyTorch loop (interval between step ends)."""
    loop = PlainLoop(config, tokens, device=device, compile=compile)
    ends = [time.perf_counter()]
    for _ in range(config.train.steps):
        loop.step()
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends, ends[1:])]


def interleaved_step_times(config, plain_configs: dict, tokens) -> dict[str, list[float]]:
    """Seconds per training step of our Lightning run (`run_cell` on `config`, in a temporary run
    folder) and of a plain loop per entry of `plain_configs`, taking turns step by step: after each
    Lightning step, one step of each plain loop. A Lightning step is the interval from the end of
    the previous turn to its batch end, so it holds Lightning's data fetching and the cell's
    step-boundary work (validation, checkpoints) of the step before it."""
    import lightning as L

    from umup_repro.training.train import run_cell

    loops = {name: PlainLoop(c, tokens["train"]) for name, c in plain_configs.items()}
    times: dict[str, list[float]] = {"lightning": [], **{name: [] for name in loops}}

    class TakeTurns(L.Callback):
        mark = 0.0

        def on_train_start(self, trainer, pl_module):
            self.mark = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = time.perf_counter()
            times["lightning"].append(now - self.mark)
            for name, loop in loops.items():
                loop.step()
                end = time.perf_counter()
                times[name].append(end - now)
                now = end
            self.mark = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        code = run_cell(config, os.path.join(tmp, "cell"), progress="none", callbacks=[TakeTurns()], tokens=tokens)
    if code == 130:  # Ctrl-C: run_cell checkpointed and stopped; the command stops too
        raise KeyboardInterrupt
    if code != 0:
        raise RuntimeError(f"benchmark run failed with exit code {code}")
    return times


def spread(ratios: list[float]) -> dict[str, float]:
    """Median, quartiles and extremes of per-step ratios."""
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return {"median": median, "q1": q1, "q3": q3, "min": min(ratios), "max": max(ratios)}


def compare_loops(config, sp_config, *, warmup: int) -> dict[str, list[float]]:
    """Step seconds, all interleaved step by step: u-μP in our Lightning run (`config`, its logging
    as configured), u-μP plain loop (same config), SP plain loop (`sp_config`); the first `warmup`
    steps dropped. Also the per-step ratios Lightning / plain and u-μP / SP."""
    from umup_repro.data import token_arrays

    raw = interleaved_step_times(config, {"umup plain": config, "sp plain": sp_config}, token_arrays(config))
    times = {"umup lightning": raw["lightning"][warmup:], "umup plain": raw["umup plain"][warmup:]}
    times["sp plain"] = raw["sp plain"][warmup:]
    times["lightning / plain"] = [a / b for a, b in zip(times["umup lightning"], times["umup plain"])]
    times["umup / sp"] = [a / b for a, b in zip(times["umup plain"], times["sp plain"])]
    return times


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


def preset_cell(preset: str, parametrization: str, width: int, steps: int | None):
    """A preset's default cell (its shape, batch, RMS, validation and checkpoint settings) at
    `parametrization`, `width` and `steps` (default: the preset's)."""
    from umup_repro.bench.bench_cell import cell_config

    return resolve_config(cell_config(preset, width, steps, parametrization))


def print_loops(times: dict[str, list[float]]) -> None:
    """Median step times, and the spread of the per-step ratios."""
    for k in ("umup plain", "umup lightning", "sp plain"):
        print(f"  {k:15s} {statistics.median(times[k]) * 1e3:8.1f} ms")
    pairs = {"lightning / plain": ("umup lightning", "umup plain"), "umup / sp": ("umup plain", "sp plain")}
    for k, name in (("lightning / plain", "Lightning / plain loop (u-muP)"), ("umup / sp", "u-muP / SP (plain loop)")):
        r, (a, b) = spread(times[k]), pairs[k]
        print(
            f"  {name:31s} {r['median']:.3f} per step, median (IQR {r['q1']:.3f}-{r['q3']:.3f},"
            f" min {r['min']:.3f}, max {r['max']:.3f}; {len(times[k])} steps);"
            f" total time {sum(times[a]) / sum(times[b]):.3f}"
        )


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
            f"training step (fp32, CPU/1 device), {args.rounds} x {args.steps} steps after {args.warmup_steps}"
            " warm-up steps, our Lightning run and plain loops taking turns step by step:"
        )
        shape_steps = dict(shape, steps=args.warmup_steps + args.steps)
        runs = [
            compare_loops(
                step_config("umup", **shape_steps), step_config("sp", **shape_steps), warmup=args.warmup_steps
            )
            for _ in range(args.rounds)
        ]
        print_loops({k: [x for r in runs for x in r[k]] for k in runs[0]})
        print(f"  u-muP / SP (forward+backward):  {times['umup'] / times['sp']:.3f}")
    if args.preset != "none":
        config = preset_cell(args.preset, "umup", args.preset_width, args.preset_steps)
        c = config
        print(
            f"a whole cell of preset {args.preset} (u-muP, width {c.model.width}, depth {c.model.depth},"
            f" batch {c.train.batch_size}x{c.model.seq_len}, {c.train.steps} steps, RMS every {c.log.rms_every},"
            f" validation every {c.log.val_every}, checkpoint every {c.train.checkpoint_every}), taking turns:"
        )
        sp = preset_cell(args.preset, "sp", args.preset_width, args.preset_steps)
        print_loops(compare_loops(config, sp, warmup=args.warmup_steps))

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
