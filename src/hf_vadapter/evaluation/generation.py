"""Generate and decode answers: for images and prompts (`answer`), or batched over example rows
(`generate_predictions`: left-padded prompts, greedy or beam decoding with the KV cache). Both go through
`generate_answers`, the one place that generates and decodes, and both describe, then answer, when the processor
says so (`describe_first`)."""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..training.collator import VisionAdapterCollator

Row = Dict[str, Any]


@torch.no_grad()
def generate_answers(model, processor, inputs: Mapping[str, torch.Tensor], **generate_kwargs) -> List[str]:
    """`model.generate` on processor outputs, then only the new tokens of each row, decoded and stripped."""
    output = model.generate(**inputs, **generate_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def describe_first(
    processor, rows: Sequence[Row], generate: Callable[[List[Row], bool], List[str]]
) -> List[str]:
    """Describe, then answer: `generate(rows, describing)` answers every row, after the model has described each
    row's image (the call with `describing=True`) and the description has gone before the row's prompt
    (`processor.with_context`).

    Without `processor.describe_prompt` this is `generate(rows, False)`. An image is described once per `image_id`
    (rows without one are described each), with the settings of the answers; a row that asks `describe_prompt` itself
    gets that description as its answer, and rows that ask for a description (`processor.is_describe_prompt`) or have
    no image get no context.
    """
    rows = list(rows)
    describe = getattr(processor, "describe_prompt", None)
    if describe is None or not rows:
        return generate(rows, False)
    keys = [row.get("image_id") or f"row {index}" for index, row in enumerate(rows)]
    first_row_of_image: Dict[str, Row] = {}
    for key, row in zip(keys, rows):
        if row.get("image") is not None:
            first_row_of_image.setdefault(key, row)
    descriptions = dict(
        zip(first_row_of_image, generate([{**row, "prompt": describe} for row in first_row_of_image.values()], True))
    )
    answers: List[Optional[str]] = [
        descriptions.get(key) if row["prompt"] == describe else None for key, row in zip(keys, rows)
    ]
    pending = [index for index, answer in enumerate(answers) if answer is None]
    contextual = [
        rows[index]
        if processor.is_describe_prompt(rows[index]["prompt"])
        else {**rows[index], "prompt": processor.with_context(rows[index]["prompt"], descriptions.get(keys[index], ""))}
        for index in pending
    ]
    for index, text in zip(pending, generate(contextual, False) if contextual else []):
        answers[index] = text
    return answers


def answer(model, processor, images: Sequence[Any], prompts: Sequence[str], **generate_kwargs) -> List[str]:
    """The model's answer to each (image, prompt) pair; `generate_kwargs` go to `model.generate` (and, with the
    processor's `describe_prompt`, to the descriptions that come first)."""

    def generate(rows: List[Row], describing: bool) -> List[str]:
        inputs = processor(images=[row["image"] for row in rows], text=[row["prompt"] for row in rows])
        return generate_answers(model, processor, inputs, **generate_kwargs)

    return describe_first(processor, [{"image": i, "prompt": p} for i, p in zip(images, prompts)], generate)


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

    Rows follow the example schema (an `image` value, PIL or undecoded, a `prompt`, and an `image_id` that lets rows
    of one image share its description when the processor describes first). The processor pads on the left, so a
    batch generates exactly as its rows would one by one; the KV cache is on and pixel values are used at prefill
    only.
    """
    collator = VisionAdapterCollator(processor, max_length=max_length, with_targets=False)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    settings = dict(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=False,
        use_cache=True,
        pad_token_id=processor.tokenizer.pad_token_id,
    )

    def generate(chosen: List[Row], describing: bool) -> List[str]:
        predictions: List[str] = []
        label = "Describing" if describing else description
        with tqdm(total=len(chosen), desc=label, unit="ex", disable=not progress) as bar:
            for start in range(0, len(chosen), batch_size):
                # The cache needs the tower's pixels here: generation feeds images at prefill only.
                chunk = [
                    {key: value for key, value in row.items() if key != "image_hash"}
                    for row in chosen[start : start + batch_size]
                ]
                inputs = {key: value.to(device) for key, value in collator(chunk).items()}
                predictions += generate_answers(model, processor, inputs, **settings)
                bar.update(len(chunk))
        return predictions

    try:
        return describe_first(processor, rows, generate)
    finally:
        model.train(was_training)
