"""`umup-repro bench-data`: is the data loader ever the bottleneck?

Loads (or builds, the first time) the configured corpus, then prints its size in tokens, the
loader's batches per second and the time of one training step (forward + backward + optimizer
step) of the model the same config builds: width 256, depth 4 and the default batch and sequence
length unless `--set` says otherwise. The loader must be at least 100x faster than the step; the
exit status is 1 when it is not. Run once on a machine with network, it also prepares the token
cache for offline compute nodes.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

import torch

from umup_repro import data
from umup_repro.core.config import ConfigError, config_to_dict, resolve_config
from umup_repro.core.overrides import parse_sets

REQUIRED_RATIO = 100.0


def main(args: argparse.Namespace) -> int:
    try:
        config = resolve_config({"model": {"width": 256, "depth": 4}}, **parse_sets(args.set or []))
    except ConfigError as err:
        print(f"umup-repro bench-data: error: {err}", file=sys.stderr)
        return 2
    d, m, t = config.data, config.model, config.train

    before = collections.Counter(data.BUILD_COUNTS)
    start = time.perf_counter()
    arrays = data.token_arrays(config)
    load_s = time.perf_counter() - start
    built = data.BUILD_COUNTS - before
    info = data.token_info(config)
    print(
        f"corpus {d.corpus} (tokenizer {d.tokenizer}, vocab {m.vocab_size}):"
        f" {'built' if built else 'cache hit'} in {load_s:.2f} s" + (f" ({dict(built)})" if built else "")
    )
    for split, tokens in arrays.items():
        print(
            f"  {split:<10} {len(tokens):>13,} tokens  {info[split]['documents']:>9,} documents"
            f"  {tokens.dtype}  {data.token_path(config, split)}"
        )

    shape = dict(batch_size=t.batch_size, seq_len=m.seq_len)
    train = arrays["train"]
    data.train_batch(train, seed=t.seed, step=0, **shape)  # page the array in
    start = time.perf_counter()
    for step in range(args.batches):
        data.train_batch(train, seed=t.seed, step=step, **shape)
    loader_s = (time.perf_counter() - start) / args.batches
    print(
        f"loader: {1 / loader_s:,.0f} batches/s ({loader_s * 1e6:.0f} us per ({t.batch_size}, {m.seq_len + 1}) batch)"
    )

    from umup_repro.bench.bench import plain_step_times

    timed = resolve_config(config_to_dict(config), **{"train.steps": args.warmup + args.steps})
    step_s = statistics.mean(plain_step_times(timed, train)[args.warmup :])
    ratio = step_s / loader_s
    print(
        f"train step ({config.parametrization}, width {m.width}, depth {m.depth}, batch {t.batch_size},"
        f" seq {m.seq_len}, {torch.get_num_threads()} threads): {step_s * 1e3:.1f} ms"
    )
    ok = ratio >= REQUIRED_RATIO
    print(f"loader is {ratio:,.0f}x faster than a step (required: {REQUIRED_RATIO:.0f}x): {'ok' if ok else 'TOO SLOW'}")
    return 0 if ok else 1
