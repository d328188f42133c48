"""`language_model_dtype="auto"`: bf16 only where a start-up measurement finds it clearly faster than fp32."""

import logging

import pytest
import torch

from hf_vadapter.training import dtype_choice
from hf_vadapter.training.dtype_choice import (
    MIN_BF16_SPEEDUP,
    choose_language_model_dtype,
    measure_bf16_speedup,
    resolve_language_model_dtype,
)


def fake_timer(fp32_seconds: float, bf16_seconds: float):
    return lambda dtype: {torch.float32: fp32_seconds, torch.bfloat16: bf16_seconds}[dtype]


@pytest.mark.parametrize(
    "fp32, bf16, expected",
    [
        (1.6, 1.08, torch.bfloat16),  # native bf16 (AVX-512 BF16): ~1.5x faster
        (3.3, 98.0, torch.float32),  # emulated bf16 (AVX2 only): ~30x slower
        (1.0, 1.0, torch.float32),  # no gain: keep full precision
        (1.0, 1.0 / MIN_BF16_SPEEDUP, torch.bfloat16),  # exactly the threshold
    ],
)
def test_auto_keeps_bf16_only_where_it_is_clearly_faster(fp32, bf16, expected, caplog) -> None:
    with caplog.at_level(logging.INFO, logger=dtype_choice.__name__):
        assert choose_language_model_dtype("cpu", timer=fake_timer(fp32, bf16)) == expected
    assert f"auto: {expected}" in caplog.text  # the choice is logged with its measurement
    assert f"{fp32 / bf16:.2f}x" in caplog.text


def test_the_real_measurement_returns_a_positive_ratio() -> None:
    torch.manual_seed(0)
    assert 0 < measure_bf16_speedup(lambda dtype: dtype_choice.time_matmul(dtype, rows=16, width=32, repeats=1))


def test_resolve_names_and_refuses_unknown_values(monkeypatch) -> None:
    assert resolve_language_model_dtype(None) is None
    assert resolve_language_model_dtype("bfloat16") is torch.bfloat16
    monkeypatch.setattr(dtype_choice, "time_matmul", fake_timer(3.3, 98.0))
    monkeypatch.setattr(choose_language_model_dtype, "__defaults__", ("cpu", dtype_choice.time_matmul))
    assert resolve_language_model_dtype("auto") is torch.float32
    with pytest.raises(ValueError, match="not 'auto' or a torch dtype"):
        resolve_language_model_dtype("bf16ish")
