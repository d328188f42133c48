"""Shared pieces of the training tests (no tests here): tiny data, argument sets, and adapter comparisons."""

from pathlib import Path
from typing import Dict

import pytest
import torch

from hf_vadapter.modeling.safe_io import load_safetensors
from hf_vadapter.training import parse_arguments

TOWER, LM = "vit", "llama"


@pytest.fixture
def bases(tiny_bases):
    """(tower folder, LM folder with a chat template)."""
    return tiny_bases(TOWER, LM, chat_template=True)


def run_values(bases, output_dir: Path, **overrides) -> Dict:
    """Argument values of a tiny, fast run: 4 synthetic images (24 rows: captions + 5 VQA types), batch 4."""
    tower, lm = bases
    values = dict(
        vision_model_name_or_path=tower,
        text_model_name_or_path=lm,
        adapter_type="mlp_projector",
        adapter_config={"num_layers": 1},
        dataset="synthetic",
        num_train_images=2,
        num_eval_images=1,
        render_size=32,
        max_length=128,
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=6,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        generation_eval=False,
        generation_max_new_tokens=4,
        csv_log=False,
        loss_curve=False,
    )
    values.update(overrides)
    return values


def arguments(bases, output_dir: Path, **overrides):
    return parse_arguments([], values=run_values(bases, output_dir, **overrides))


def adapter_file(folder) -> Dict[str, torch.Tensor]:
    return load_safetensors(Path(folder) / "adapter_model.safetensors")


def max_abs_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[key].float() - b[key].float()).abs().max()) for key in a)


def adapter_tensors(model) -> Dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.adapter_state_dict().items()}
