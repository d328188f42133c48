"""Batched generation over example rows: left-padded prompts, greedy (or beam) decoding with the KV cache."""

from typing import Any, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..training.collator import VisionAdapterCollator

SCORED_TASKS = ("caption", "vqa")


@torch.no_grad()
def generate_predictions(
    model,
    processor,
    rows: Sequence[Dict[str, Any]],
    batch_size: int = 8,
    max_new_tokens: int = 32,
    num_beams: int = 1,
    max_length: Optional[int] = None,
    progress: bool = True,
    description: str = "Generating",
) -> List[str]:
    """The model's answer to every row's prompt and image, in row order.

    Rows follow the example schema (an `image` value, PIL or undecoded, and a `prompt`). The processor pads on the
    left, so a batch generates exactly as its rows would one by one; the KV cache is on and pixel values are used at
    prefill only.
    """
    collator = VisionAdapterCollator(processor, max_length=max_length, with_targets=False)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predictions: List[str] = []
    starts = range(0, len(rows), batch_size)
    bar = tqdm(total=len(rows), desc=description, unit="ex", disable=not progress)
    try:
        for start in starts:
            chunk = [rows[index] for index in range(start, min(start + batch_size, len(rows)))]
            # The cache needs the tower's pixels here: generation feeds images at prefill only.
            chunk = [{key: value for key, value in row.items() if key != "image_hash"} for row in chunk]
            inputs = {key: value.to(device) for key, value in collator(chunk).items()}
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                use_cache=True,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            predictions.extend(text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True))
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return predictions
