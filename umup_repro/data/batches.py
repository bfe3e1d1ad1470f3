"""Batches: windows of a token array, each batch a pure function of (tokens, seed, step, shape).

So a resumed or re-run cell sees the same data without saving any loader state.
"""

from __future__ import annotations

import numpy as np
import torch


def train_batch(tokens: np.ndarray, *, seed: int, step: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """(batch_size, seq_len + 1) windows at random starts drawn from a generator seeded by
    (seed, step) alone: the same arguments give the same batch in any process, in any order."""
    last_start = _last_start(tokens, seq_len)
    rng = np.random.default_rng([seed % 2**64, step % 2**64])
    starts = rng.integers(0, last_start, size=batch_size, endpoint=True)
    return _windows(tokens, starts, seq_len)


def validation_batches(tokens: np.ndarray, *, batch_size: int, seq_len: int, n_batches: int) -> list[torch.Tensor]:
    """A fixed validation set: n_batches * batch_size windows spread evenly over the array (first at
    the start, last at the end), independent of any seed."""
    last_start = _last_start(tokens, seq_len)
    n = n_batches * batch_size
    starts = np.arange(n, dtype=np.int64) * last_start // max(n - 1, 1)
    return [_windows(tokens, starts[i * batch_size : (i + 1) * batch_size], seq_len) for i in range(n_batches)]


def _last_start(tokens: np.ndarray, seq_len: int) -> int:
    """The last index a window of seq_len + 1 tokens can start at."""
    last_start = len(tokens) - (seq_len + 1)
    if last_start < 0:
        raise ValueError(f"{len(tokens)} tokens cannot hold one sequence of seq_len + 1 = {seq_len + 1}")
    return last_start


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    index = starts[:, None] + np.arange(seq_len + 1)
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))
