"""Joint training on image-text and text-only data with disjoint parameter groups (LLaMA-Adapter V2).

LLaMA-Adapter V2 trains its visual parameters (visual projection, early zero-init gates) on image-text batches only,
and its instruction parameters (late adaption prompts, bias/scale tuning, norms) on text-only batches only. Two
pieces make that work on the HF Trainer:

- `ModalityGroupedSampler` orders the training rows so that every optimizer step (all its micro-batches, on all
  processes) is all image-text or all text-only, reproducibly per epoch (resuming replays the same order).
- `modality_parameter_groups(model)` asks the adapter for its groups: an adapter that defines
  ``parameter_groups() -> {"image": [names], "text": [names]}`` (keys may also be "vision"/"visual" and
  "instruction"/"language"; names relative to the model, the adapter or the LM) gets the disjoint updates: after
  each backward pass, the gradients of the group that does not belong to the batch's modality are dropped, so
  neither the optimizer step nor its weight decay touch them. Adapters without groups train every parameter on
  both kinds of batch.
"""

import math
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import Sampler

IMAGE, TEXT = "image", "text"
GROUP_ALIASES = {
    IMAGE: ("image", "vision", "visual", "image_text", "multimodal"),
    TEXT: ("text", "instruction", "language", "text_only"),
}


def _full_name(name: str, parameters: Dict[str, torch.nn.Parameter]) -> str:
    for candidate in (name, f"adapter.{name}", f"language_model.{name}"):
        if candidate in parameters:
            return candidate
    raise KeyError(f"The adapter's parameter group names {name!r}, which is no parameter of the model.")


def modality_parameter_groups(model) -> Optional[Dict[str, List[str]]]:
    """{"image": names, "text": names} from the adapter's `parameter_groups()`, or None when it has none."""
    adapter = getattr(model, "adapter", None)
    if adapter is None or not callable(getattr(adapter, "parameter_groups", None)):
        return None
    declared = adapter.parameter_groups()
    parameters = dict(model.named_parameters())
    groups: Dict[str, List[str]] = {}
    for modality, aliases in GROUP_ALIASES.items():
        names = [name for alias in aliases for name in declared.get(alias, [])]
        groups[modality] = sorted({_full_name(name, parameters) for name in names})
    unknown = sorted(set(declared) - {alias for aliases in GROUP_ALIASES.values() for alias in aliases})
    if unknown:
        raise ValueError(f"Unknown parameter group names {unknown}; expected image/vision and text/instruction groups.")
    shared = set(groups[IMAGE]) & set(groups[TEXT])
    if shared:
        raise ValueError(f"Parameter groups must be disjoint; both hold {sorted(shared)[:5]}.")
    return groups


def batch_modality(inputs: Dict[str, torch.Tensor]) -> Optional[str]:
    """"image" when every row of the batch has an image, "text" when none has, None when mixed."""
    rows = inputs["input_ids"].shape[0]
    images = inputs.get("image_features", inputs.get("pixel_values"))
    count = 0 if images is None else images.shape[0]
    if count == 0:
        return TEXT
    return IMAGE if count == rows else None


def drop_other_group_grads(model, groups: Dict[str, List[str]], modality: Optional[str]) -> None:
    """Forget the gradients of the parameter group that does not belong to `modality` (no-op for mixed batches)."""
    if modality is None:
        return
    other = TEXT if modality == IMAGE else IMAGE
    parameters = dict(model.named_parameters())
    for name in groups[other]:
        parameters[name].grad = None


class ModalityGroupedSampler(Sampler):
    """Yield row indices in blocks of `group_size`, each block all image-text or all text-only.

    Within each modality rows are shuffled, the last incomplete block is filled by wrapping around, and the block
    order is shuffled; everything is drawn from `seed + epoch` (the Trainer calls `set_epoch`).
    With `group_size = per-device batch x processes x gradient accumulation`, every optimizer step is one modality.
    """

    def __init__(self, has_image: Sequence[bool], group_size: int, seed: int = 0):
        self.image_rows = [index for index, flag in enumerate(has_image) if flag]
        self.text_rows = [index for index, flag in enumerate(has_image) if not flag]
        self.group_size = max(1, int(group_size))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _blocks(self, rows: List[int], generator: torch.Generator) -> List[List[int]]:
        if not rows:
            return []
        order = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
        total = math.ceil(len(order) / self.group_size) * self.group_size
        order = [order[i % len(order)] for i in range(total)]
        return [order[start : start + self.group_size] for start in range(0, total, self.group_size)]

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        blocks = self._blocks(self.image_rows, generator) + self._blocks(self.text_rows, generator)
        for position in torch.randperm(len(blocks), generator=generator).tolist():
            yield from blocks[position]

    def __len__(self) -> int:
        kinds = (self.image_rows, self.text_rows)
        return sum(math.ceil(len(rows) / self.group_size) * self.group_size for rows in kinds if rows)
