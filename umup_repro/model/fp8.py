"""FP8 formats E4M3 (weights, activations) and E5M2 (gradients) as plain, un-scaled casts.

u-μP's point is that its tensors already sit near unit scale, so a plain cast with no dynamic
scaling keeps them representable (docs/paper.md, "FP8"). Two implementations of one matmul:
- simulated: round-trip casts through torch's float8 dtypes, then a matmul in the input dtype;
  works on any device, bit-equal in its rounding to torch's own float8 conversion;
- real: `torch._scaled_mm` on GPUs with FP8 tensor cores (compute capability ≥ 8.9), picked
  automatically when shapes allow it.
Casts saturate (clamp to ±max) like the paper's casts; torch's own conversion would give NaN/inf.
"""

from __future__ import annotations

import functools

import torch

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
E5M2_MAX = float(torch.finfo(E5M2).max)  # 57344


def cast(x: torch.Tensor, fmt: torch.dtype) -> torch.Tensor:
    """Saturating cast to `fmt`, returned in the FP8 dtype."""
    limit = float(torch.finfo(fmt).max)
    return x.clamp(-limit, limit).to(fmt)


def round_trip(x: torch.Tensor, fmt: torch.dtype) -> torch.Tensor:
    """Simulated FP8: the values `x` takes after a saturating cast, in `x`'s own dtype."""
    return cast(x, fmt).to(x.dtype)


@functools.cache
def _device_has_fp8(device_index: int) -> bool:
    major, minor = torch.cuda.get_device_capability(device_index)
    return (major, minor) >= (8, 9) and hasattr(torch, "_scaled_mm")


def real_fp8_available(*tensors: torch.Tensor) -> bool:
    """True where `torch._scaled_mm` can run these operands (CUDA FP8 GPU, dims divisible by 16)."""
    first = tensors[0]
    if first.device.type != "cuda" or not _device_has_fp8(first.device.index or 0):
        return False
    return all(t.dim() == 2 and t.shape[0] % 16 == 0 and t.shape[1] % 16 == 0 for t in tensors)


def fp8_matmul(a: torch.Tensor, b_t: torch.Tensor, fmt_a: torch.dtype, fmt_b: torch.dtype) -> torch.Tensor:
    """a @ b_t.T with both operands cast to FP8 (saturating), result in a's dtype.

    a: (M, K), b_t: (N, K). Real scaled matmul where available, simulated otherwise.
    """
    if real_fp8_available(a, b_t):
        one = torch.ones((), device=a.device, dtype=torch.float32)
        out_dtype = a.dtype if a.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        # _scaled_mm wants the first operand row-major and the second column-major.
        return torch._scaled_mm(
            cast(a, fmt_a).contiguous(),
            cast(b_t, fmt_b).contiguous().t(),
            scale_a=one,
            scale_b=one,
            out_dtype=out_dtype,
        )
    return round_trip(a, fmt_a) @ round_trip(b_t, fmt_b).t()
