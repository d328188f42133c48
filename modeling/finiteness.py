"""Refusing NaN and infinite adapter weights, so a diverged run never becomes a checkpoint that loads silently."""

from typing import Dict

import torch

from .errors import NonFiniteError


def check_finite_weights(tensors: Dict[str, torch.Tensor], action: str) -> None:
    """Raise `NonFiniteError` naming every tensor of `tensors` that holds NaN or infinite values.

    `action` completes the message ("Not saving the adapter", "Not loading ..."). One reduction per tensor; adapter
    weights are small.
    """
    counts = {
        name: int((~torch.isfinite(tensor)).sum())
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    }
    if counts:
        listed = ", ".join(f"{name} ({count:,d} values)" for name, count in sorted(counts.items())[:8])
        more = f" and {len(counts) - 8} more" if len(counts) > 8 else ""
        raise NonFiniteError(
            f"{action}: {len(counts)} adapter tensors hold NaN or infinite values: {listed}{more}. Training diverged; "
            "resume from an earlier checkpoint with a lower learning rate (or float32 instead of float16)."
        )
