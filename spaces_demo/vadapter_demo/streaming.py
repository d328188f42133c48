"""`generate` in a worker thread, streamed to the request token by token, and stopped when the request goes away."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterator, Tuple

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .settings import GENERATION_TIMEOUT_S


class _Cancelled(StoppingCriteria):
    """Stops generation once the request is gone (the browser tab closed, the client cancelled)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_answer(model, processor, image: Image.Image, prompt: str, settings: Dict[str, Any], note: str,
                  model_lock: threading.Lock, count: Callable[[str, int], None]) -> Iterator[Tuple[str, str]]:
    """Yields (text so far, status) while the model generates under `model_lock`; the last pair is the answer,
    decoded from the returned ids (so it equals a direct `generate`), its status prefixed with `note`.

    Beam search cannot stream in transformers, so its answer comes at the end. `count("generating", ±1)` brackets
    the generation.
    """
    device = next(model.parameters()).device
    inputs = processor(images=[image], text=[prompt]).to(device)
    prompt_length = inputs["input_ids"].shape[1]
    streaming = settings["num_beams"] == 1
    streamer = (
        TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True,
                             timeout=GENERATION_TIMEOUT_S)
        if streaming else None
    )
    cancel = threading.Event()
    result: Dict[str, Any] = {}
    kwargs = dict(
        **inputs,
        **settings,
        use_cache=True,
        pad_token_id=processor.tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
    )
    if streamer is not None:
        kwargs["streamer"] = streamer

    def work() -> None:
        try:
            with torch.no_grad():
                result["ids"] = model.generate(**kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the request's thread
            result["error"] = error
        finally:
            if streamer is not None:
                streamer.end()

    if not model_lock.acquire(blocking=False):
        yield "", "Waiting for the model: another request is generating."
        model_lock.acquire()
    worker = threading.Thread(target=work, name="hf_vadapter-demo-generate", daemon=True)
    start = time.perf_counter()
    count("generating", +1)
    try:
        worker.start()
        if streamer is not None:
            text = ""
            for piece in streamer:
                text += piece
                if piece:
                    yield text.strip(), "Generating…"
        else:
            yield "", "Beam search does not stream: the answer appears when it is done."
        worker.join()
    finally:
        cancel.set()  # a closed request stops the model at its next token
        worker.join()
        count("generating", -1)
        model_lock.release()
    if "error" in result:
        raise result["error"]
    new_tokens = result["ids"][0, prompt_length:]
    answer = processor.decode(new_tokens, skip_special_tokens=True).strip()
    seconds = time.perf_counter() - start
    mode = "beam search" if settings["num_beams"] > 1 else ("sampling" if settings["do_sample"] else "greedy")
    status = f"{len(new_tokens)} new tokens in {seconds:.1f} s ({mode})."
    if not answer:
        status += " The model produced no text."
    yield answer, (note + " " + status).strip()
