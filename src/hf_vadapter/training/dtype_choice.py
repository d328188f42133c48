"""Choose the frozen LM's dtype by measuring this machine, not by assuming it.

bfloat16 halves the LM's memory traffic, and on CPUs with native bf16 instructions (AVX-512 BF16, AMX) its matmuls
run faster than float32. CPUs without them emulate bf16 and can be tens of times slower than float32, so
`language_model_dtype="auto"` times one LM-sized matmul in each dtype at start-up and keeps bf16 only where it is
clearly faster.
"""

import logging
import time
from typing import Callable, Dict, Optional

import torch

logger = logging.getLogger(__name__)

# bf16 costs precision; take it only for a clear speed-up.
MIN_BF16_SPEEDUP = 1.2


def time_matmul(dtype: torch.dtype, rows: int = 512, width: int = 576, repeats: int = 3) -> float:
    """Best-of-`repeats` seconds of one [rows, width] x [width, 4 * width] matmul in `dtype` on the CPU."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, width, generator=generator).to(dtype)
    b = torch.randn(width, 4 * width, generator=generator).to(dtype)
    a @ b  # warm-up: kernel selection and packing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


def measure_bf16_speedup(timer: Callable[[torch.dtype], float] = time_matmul) -> float:
    """How many times faster a bf16 matmul runs than a float32 one on this CPU (below 1: slower)."""
    seconds: Dict[torch.dtype, float] = {dtype: timer(dtype) for dtype in (torch.float32, torch.bfloat16)}
    return seconds[torch.float32] / seconds[torch.bfloat16]


def choose_language_model_dtype(
    device: str = "cpu", timer: Callable[[torch.dtype], float] = time_matmul
) -> torch.dtype:
    """bfloat16 where it is supported and, on a CPU, measured at least `MIN_BF16_SPEEDUP` times faster than
    float32; float32 otherwise. The choice and its measurement are logged."""
    if str(device).startswith("cuda"):
        chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        logger.info("language_model_dtype=auto: %s on %s", chosen, device)
        return chosen
    speedup = measure_bf16_speedup(timer)
    chosen = torch.bfloat16 if speedup >= MIN_BF16_SPEEDUP else torch.float32
    logger.info(
        "language_model_dtype=auto: %s (a bf16 matmul ran %.2fx the speed of fp32 on this CPU; bf16 is kept from "
        "%.1fx)", chosen, speedup, MIN_BF16_SPEEDUP,
    )
    return chosen


def resolve_language_model_dtype(value: Optional[str], device: str = "cpu") -> Optional[torch.dtype]:
    """The dtype a `language_model_dtype` setting names: None (leave the LM as loaded), "auto" (measured), or a
    torch dtype name such as "bfloat16"."""
    if value in (None, ""):
        return None
    if value == "auto":
        return choose_language_model_dtype(device)
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"language_model_dtype={value!r} is not 'auto' or a torch dtype name such as 'bfloat16'.")
    return dtype
