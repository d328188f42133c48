"""Experts at inference (LLaMA-Adapter V2): text from external models added to the prompt as context.

An expert is any callable that looks at the image (and, if it takes two arguments, the user's prompt) and returns
text: a captioner, an OCR engine, a detector that lists objects, or another adapter's caption. Its text goes into the
prompt through a template, at no training cost; the model itself is unchanged. It works with every adapter family,
and is what LLaMA-Adapter V2 uses to strengthen image understanding at inference.

    from hf_vadapter.experts import adapter_captioner, generate_with_experts

    ocr = lambda image: pytesseract.image_to_string(image)          # any callable image -> text
    captioner = adapter_captioner(caption_model, caption_processor)  # another adapter as an expert
    answers = generate_with_experts(
        model, processor, images=[photo], prompts=["What does the sign say?"], experts=[captioner, ocr],
        max_new_tokens=32,
    )

With the default template the prompt the model sees is "Context: <caption> <ocr text>\\nWhat does the sign say?".
"""

import inspect
from typing import Callable, List, Sequence, Union

from PIL import Image

from .evaluation.generation import answer
from .modeling.processing_vadapter import CONTEXT_TEMPLATE

Expert = Callable[..., str]  # (image) -> text, or (image, prompt) -> text
DEFAULT_TEMPLATE = CONTEXT_TEMPLATE


def _call_expert(expert: Expert, image: Image.Image, prompt: str) -> str:
    try:
        parameters = inspect.signature(expert).parameters.values()
        takes_prompt = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters) >= 2 or any(
            p.kind == p.VAR_POSITIONAL for p in parameters
        )
    except (TypeError, ValueError):  # builtins without a signature: image only
        takes_prompt = False
    text = expert(image, prompt) if takes_prompt else expert(image)
    if not isinstance(text, str):
        raise TypeError(f"Expert {expert!r} returned {type(text).__name__}, not text.")
    return text.strip()


def add_expert_context(
    prompt: str,
    image: Image.Image,
    experts: Union[Expert, Sequence[Expert]],
    template: str = DEFAULT_TEMPLATE,
) -> str:
    """`prompt` with the experts' texts (joined by spaces, empty ones skipped) put in as context by `template`.

    `template` has `{context}` and `{prompt}` fields. Without any expert text the prompt is returned unchanged.
    """
    if callable(experts):
        experts = [experts]
    texts = [text for text in (_call_expert(expert, image, prompt) for expert in experts) if text]
    if not texts:
        return prompt
    return template.format(context=" ".join(texts), prompt=prompt)


def generate_with_experts(
    model,
    processor,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    experts: Union[Expert, Sequence[Expert]],
    template: str = DEFAULT_TEMPLATE,
    **generate_kwargs,
) -> List[str]:
    """Generate answers for (image, prompt) pairs after adding each image's expert context to its prompt.

    Returns the decoded new text of each row. `generate_kwargs` go to `model.generate` (max_new_tokens, num_beams,
    ...).
    """
    if len(images) != len(prompts):
        raise ValueError(f"Got {len(images)} images but {len(prompts)} prompts; give one image per prompt.")
    contextual = [add_expert_context(p, image, experts, template) for p, image in zip(prompts, images)]
    return answer(model, processor, images, contextual, **generate_kwargs)


def adapter_captioner(
    model, processor, prompt: str = "describe the image.", max_new_tokens: int = 30, **generate_kwargs
) -> Callable[[Image.Image], str]:
    """Another `VisionAdapterForCausalLM` (for example a captioning adapter) as an expert: image -> its caption."""
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)

    def caption(image: Image.Image) -> str:
        return answer(model, processor, [image], [prompt], **settings)[0]

    return caption
