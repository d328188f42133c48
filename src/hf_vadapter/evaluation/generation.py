"""Generate and decode answers: for images and prompts (`answer`), or batched over example rows
(`generate_predictions`: left-padded prompts, greedy or beam decoding with the KV cache). Both go through
`generate_answers`, the one place that generates and decodes."""

from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..training.collator import VisionAdapterCollator

@torch.no_grad()
def generate_answers(model, processor, inputs: Mapping[str, torch.Tensor], **generate_kwargs) -> List[str]:
    """`model.generate` on processor outputs, then only the new tokens of each row, decoded and stripped."""
    output = model.generate(**inputs, **generate_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def answer(model, processor, images: Sequence[Any], prompts: Sequence[str], **generate_kwargs) -> List[str]:
    """The model's answer to each (image, prompt) pair; `generate_kwargs` go to `model.generate`."""
    return generate_answers(model, processor, processor(images=list(images), text=list(prompts)), **generate_kwargs)


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
            predictions += generate_answers(
                model,
                processor,
                inputs,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                use_cache=True,
                pad_token_id=processor.tokenizer.pad_token_id,
            )
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return predictions
