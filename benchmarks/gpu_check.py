"""The GPU checks of issue 18 in one short run (about 5 minutes on one H100/H200; each part has a
time guard): `python benchmarks/gpu_check.py [--budget-s 420]`.

Prints, on a GPU with FP8 tensor cores:
1. real FP8 (`torch._scaled_mm`, unit scales) vs the simulated casts on the same operands: max and
   RMS relative difference (bound from tests/test_gpu.py: RMS ≤ 1e-3 in fp32 output);
2. u-μP FP8 vs BF16 training-step time at width 4096 (FP8 should be faster);
3. u-μP BF16 MFU at width 2048 (eager and `torch.compile`; target ≥ 40%);
4. one `paper` cell's measured tokens/s against the preset's estimate (umup_repro/sweeps/budget.py), in
   fp32 and TF32, and the utilisation that calibrates `umup-repro cells --measured`;
5. where two GPUs are visible, the same small cell on 1 GPU and on 2 (DDP, FSDP) through
   `umup-repro train`: tokens/s and final losses (within 1e-3 expected).
Training parts use random tokens (no corpus needed); part 5 trains a BPE tokenizer on a generated
text file. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from umup_repro.bench.bench import plain_step_times, step_config  # noqa: E402
from umup_repro.core.compute import flops_per_token  # noqa: E402
from umup_repro.core.config import resolve_config  # noqa: E402
from umup_repro.model import fp8  # noqa: E402
from umup_repro.sweeps import budget, grid, presets  # noqa: E402
from umup_repro.training.provenance import peak_flops  # noqa: E402

START = time.monotonic()


def left(budget_s: float) -> float:
    return budget_s - (time.monotonic() - START)


def fp8_vs_simulated() -> None:
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(4096, 4096, device="cuda", dtype=dtype)
        b = torch.randn(4096, 4096, device="cuda", dtype=dtype)
        a[0] = 1000.0  # a saturated row: the casts clamp to ±448
        if not fp8.real_fp8_available(a, b):
            print("  real FP8 unavailable here (needs compute capability >= 8.9)")
            return
        real = fp8.fp8_matmul(a, b, fp8.E4M3, fp8.E4M3).float()
        sim = fp8.round_trip(a.float(), fp8.E4M3) @ fp8.round_trip(b.float(), fp8.E4M3).t()
        diff = (real - sim).abs()
        print(
            f"  {str(dtype):15s} out: max |real-sim|/max|sim| {float(diff.max() / sim.abs().max()):.2e},"
            f" RMS rel {float(diff.pow(2).mean().sqrt() / sim.pow(2).mean().sqrt()):.2e}"
        )


def step_time(
    parametrization: str,
    *,
    width: int,
    depth: int,
    batch: int,
    seq: int,
    steps: int,
    precision: str = "bf16-mixed",
    compile: bool = False,
    config=None,
) -> tuple[float, float]:
    """(median step seconds, MFU against the bf16 peak) of a plain training loop on random tokens."""
    config = config or step_config(
        parametrization, width=width, depth=depth, batch_size=batch, seq_len=seq, steps=steps, precision=precision
    )
    tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, size=20_000_000, dtype=np.int64)
    if compile:
        torch._dynamo.config.recompile_limit = 4 * config.model.depth + 8
    times = plain_step_times(config, tokens, device="cuda", compile=compile)
    step_s = statistics.median(times[3:])
    tps = config.train.batch_size * config.model.seq_len / step_s
    torch._dynamo.reset()
    return step_s, tps * flops_per_token(config) / peak_flops(torch.device("cuda"))


def paper_cell(budget_s: float) -> None:
    preset = presets.load_preset("paper")
    base = [
        c
        for c in grid.expand_preset(preset, ["lr_width"])["lr_width"]
        if c.config.model.width == 256 and c.config.parametrization == "umup"
    ][0]
    compute = {**budget.DEFAULT_COMPUTE, **preset.get("compute", {})}
    for precision in ("32", "tf32"):
        if left(budget_s) < 30:
            return
        raw = json.loads(base.config_json)
        raw["train"].update(steps=30, precision=precision)
        config = resolve_config(raw)
        step_s, _ = step_time("umup", width=0, depth=0, batch=0, seq=0, steps=30, config=config)
        tps = config.train.batch_size * config.model.seq_len / step_s
        estimate = budget.effective_peak(config, compute) * compute["utilisation"] / flops_per_token(config)
        achieved = tps * flops_per_token(config) / budget.effective_peak(config, compute)
        print(
            f"  cell {base.id} (u-μP width 256, {precision}): measured {tps:,.0f} tok/s, estimate"
            f" {estimate:,.0f} tok/s (ratio {tps / estimate:.2f}); utilisation {achieved:.1%} of the"
            f" {precision} peak"
        )


def one_vs_two_gpus(budget_s: float) -> None:
    if torch.cuda.device_count() < 2:
        print(f"  {torch.cuda.device_count()} GPU visible: skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        words = [f"w{i}" for i in range(3000)]
        rng = np.random.default_rng(0)
        text = Path(tmp) / "corpus.txt"
        text.write_text("\n\n".join(" ".join(rng.choice(words, 200)) for _ in range(4000)))
        cfg = Path(tmp) / "cell.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "parametrization": "umup",
                    "model": {"width": 512, "depth": 4, "seq_len": 256},
                    "data": {"corpus": "text_files", "files": [str(text)]},
                    "train": {"steps": 100, "batch_size": 32, "warmup": 10, "precision": "bf16-mixed"},
                    "log": {"rms_every": 50, "val_every": 50},
                }
            )
        )
        results = {}
        for devices, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):
            if left(budget_s) < 40:
                break
            out = Path(tmp) / f"run{devices}{strategy}"
            cmd = [
                sys.executable,
                "-m",
                "umup_repro.cli",
                "train",
                str(cfg),
                "--out",
                str(out),
                "--progress",
                "none",
                "--set",
                f"distributed.devices={devices}",
                "--set",
                f"distributed.strategy={strategy}",
            ]
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=max(30, left(budget_s)),
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            if proc.returncode:
                print(f"  {devices} GPU(s) {strategy}: failed rc {proc.returncode}: {proc.stderr[-1500:]}")
                continue
            results[devices, strategy] = s = json.loads((out / "summary.json").read_text())
            print(
                f"  {devices} GPU(s) {strategy}: {s['tokens_per_second']:,.0f} tok/s, final train"
                f" {s['final_train_loss']:.5f}, val {s['final_val_loss']:.5f}"
            )
        if (1, "ddp") in results:
            for key, s in results.items():
                diff = abs(s["final_val_loss"] - results[1, "ddp"]["final_val_loss"])
                print(f"  |final val - 1 GPU| {key}: {diff:.2e} (expected < 1e-3)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=420, help="stop starting new parts after this")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to check")
        return 1
    print(f"gpu_check: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}")
    print("1. real FP8 vs simulated casts, 4096x4096x4096:")
    fp8_vs_simulated()
    print("2. u-μP training step at width 4096 (depth 4, batch 8x1024), BF16 vs FP8:")
    t16, m16 = step_time("umup", width=4096, depth=4, batch=8, seq=1024, steps=13)
    t8, m8 = step_time("umup_fp8", width=4096, depth=4, batch=8, seq=1024, steps=13)
    print(f"  bf16 {t16 * 1e3:.1f} ms (MFU {m16:.1%}), fp8 {t8 * 1e3:.1f} ms; FP8 speed-up {t16 / t8:.2f}x")
    print("3. u-μP BF16 MFU at width 2048 (depth 8, batch 16x1024):")
    for compile in (False, True):
        if left(args.budget_s) < 120:
            print("  (skipped: time budget)")
            break
        t, mfu = step_time("umup", width=2048, depth=8, batch=16, seq=1024, steps=13, compile=compile)
        print(f"  {'compiled' if compile else 'eager':8s} {t * 1e3:.1f} ms/step, MFU {mfu:.1%}")
    print("4. a `paper` cell: measured tokens/s vs the preset's estimate:")
    paper_cell(args.budget_s)
    print("5. the same cell on 1 and 2 GPUs (DDP, FSDP):")
    one_vs_two_gpus(args.budget_s)
    print(f"gpu_check: done in {time.monotonic() - START:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
