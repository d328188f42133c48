"""Shared pieces of the real-backbone benchmarks: the packaged pair, a short VQA-style batch, and a median timer.

The backbones are the packaged DINOv2-small and SmolLM2-135M-Instruct, converted once and cached by
`convert_dinov2()` / `convert_smollm2()` (no Hub access). Step timings use `epalm_backward.clock` (process CPU time on
CPU: the work done, robust to other load); generation uses wall time, since tokens/s is a wall-clock rate.
"""

import contextlib
import io
import math
import os
import platform
import statistics
import subprocess
import sys
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from epalm_backward import clock  # noqa: E402  (one timer for every benchmark)

from hf_vadapter import EPALMConfig, MLPProjectorConfig, PerceiverResamplerConfig, VisionAdapterForCausalLM

PROMPT = "Question: what colour is the square? Answer:"
ANSWER = " red"


def adapter_configs(image_size: int = 126) -> Dict[str, object]:
    """The adapters compared: the quickstart default, a small perceiver resampler, and eP-ALM's default.

    The MLP projector pools 3x3 on the default 126 px (9x9 patches -> 9 tokens); 3 does not divide the 16x16 grid of
    224 px, so there it pools 4x4 (16 tokens)."""
    return {
        "mlp_projector": MLPProjectorConfig(feature_layers=[3, 6, 9], pool_size=3 if image_size == 126 else 4),
        "perceiver_small": PerceiverResamplerConfig(depth=2, num_latents=32, hidden_size=384, num_heads=6),
        "epalm": EPALMConfig(),
    }


def backbone_paths():
    from hf_vadapter.conversion.dinov2_onnx import convert_dinov2
    from hf_vadapter.conversion.smollm2_gguf import convert_smollm2

    return str(convert_dinov2()), str(convert_smollm2())


def build(adapter: str, image_size: int) -> VisionAdapterForCausalLM:
    vision, text = backbone_paths()
    torch.manual_seed(0)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(
        vision, text, adapter_configs(image_size)[adapter], image_size=image_size
    )
    model.config.supervised_logits_only = True  # as hf_vadapter's training runs it
    return model.train()


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backbone_paths()[1])


def make_batch(model: VisionAdapterForCausalLM, batch: int, with_answer: bool = True) -> Dict[str, torch.Tensor]:
    """Placeholders + a short prompt (+ a one-word answer, the only supervised tokens); random pixels."""
    tok = tokenizer()
    prompt = tok(PROMPT, add_special_tokens=False).input_ids
    answer = tok(ANSWER, add_special_tokens=False).input_ids if with_answer else []
    ids = [model.config.image_token_id] * model.config.num_image_tokens + prompt + answer
    input_ids = torch.tensor([ids] * batch)
    labels = torch.full_like(input_ids, -100)
    if answer:
        labels[:, -len(answer) :] = input_ids[:, -len(answer) :]
    size = model.config.image_size
    pixel_values = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels, pixel_values=pixel_values)


def median_times(fns: Sequence[Callable[[], object]], repeats: int, timer: Callable[[], float] = None) -> List[float]:
    """Median of `repeats` timed calls of each function, after one untimed warm-up each.

    The calls are interleaved (a, b, a, b, ...), so a drift in the machine's speed falls on every function alike and
    their ratio stays fair."""
    timer = timer or (lambda: clock("cpu"))
    for fn in fns:
        fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = timer()
            fn()
            fn_times.append(timer() - start)
    return [statistics.median(fn_times) for fn_times in times]


def median_time(fn: Callable[[], object], repeats: int, timer: Callable[[], float] = None) -> float:
    """Median of `repeats` timed calls after one untimed warm-up."""
    return median_times([fn], repeats, timer)[0]


def mean_and_standard_error(values: Sequence[float]) -> Tuple[float, float]:
    """Mean of `values` over seeds and its standard error (0 for a single value)."""
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.mean(values), error


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - description only
        name = platform.processor()
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


class _Tee(io.StringIO):
    """A copy of everything written, passed on to `stream` as it comes."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def tee_stdout() -> Iterator[io.StringIO]:
    """Print as usual and keep a copy: `with tee_stdout() as copy: ...; copy.getvalue()`."""
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield tee


def with_caption(prompt: str, caption: str) -> str:
    """`prompt` with `caption` put before it as expert context, as `hf_vadapter.experts` does for a captioner."""
    from hf_vadapter.experts import add_expert_context

    return add_expert_context(prompt, None, lambda image: caption)
