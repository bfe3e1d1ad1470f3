"""The numbers every compute estimate shares: a config's training FLOPs per token and the GPUs'
dense peak FLOP/s, kept once here (the MFU of a summary, `umup-repro cells`, the benchmarks).

Peaks: one H100 SXM's dense figures as Lightning's `lightning.fabric.utilities.throughput` table
gives them (FP8 = its int8 figure; NVIDIA's H100 datasheet gives the same 1979 TFLOP/s). The H200
has the H100's compute (same GH100 die, more memory). Torch-free.
"""

from __future__ import annotations

from umup_repro.core.config import RunConfig

H100_SXM_PEAKS = {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp8": 1978.9e12}
# Dense bf16 tensor-core peak FLOP/s by GPU name (substring match), for MFU. FP8 runs are reported
# against the bf16 peak too, so their MFU compares directly with bf16 runs'.
PEAK_BF16_FLOPS = {
    "H200": H100_SXM_PEAKS["bf16"],
    "H100": H100_SXM_PEAKS["bf16"],
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def flops_per_token(config: RunConfig) -> float:
    """Training FLOPs per token, 6·(non-embedding params + readout) + attention (for MFU and
    the GPU-hour estimates). Torch-free, so that planning a DAG (`umup-repro cells`, Snakemake's
    resource estimates) never imports torch."""
    m = config.model
    matmul_params = m.depth * (4 * m.width**2 + 3 * m.width * m.ffn_width) + m.width * m.vocab_size
    attention = 6 * m.depth * m.seq_len * m.width  # QKᵀ and AV, forward+backward, causal ≈ half
    return 6 * matmul_params + attention
