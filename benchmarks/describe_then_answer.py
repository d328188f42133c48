"""Describe, then answer: the model's own caption as context for its answers (LLaMA-Adapter V2's expert context,
with the model as its own captioner).

    python benchmarks/describe_then_answer.py                          # the quickstart's run in outputs/quickstart
    python benchmarks/describe_then_answer.py --output-dir runs/x --seed 1

Reads the checkpoint the quickstart saved (`<output-dir>/adapter`) and the captions its evaluation generated
(`<output-dir>/eval/<split>/predictions.jsonl`), rebuilds the same test and held-out scenes (same sizes and seed),
and answers every question three ways:

- plain: the evaluation's own answers (its `metrics.json`);
- own caption: the model's caption of the image goes before the question as `hf_vadapter.experts` puts an expert's
  text ("Context: <caption>", then the question; the image after them, as in training);
- reference caption: the same with the data set's caption, which bounds what a better caption could give this adapter.

VQA exact match per question type, and the inference cost: the caption's decode tokens per image (paid once per
image, however many questions follow) and the prompt tokens it adds to each question. Nothing trains.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, with_caption  # noqa: E402

from hf_vadapter import VisionAdapterForCausalLM, VisionAdapterProcessor  # noqa: E402
from hf_vadapter.data.synthetic import HELDOUT_SPLIT, QUESTION_TYPES, build_synthetic_dataset  # noqa: E402
from hf_vadapter.evaluation import generate_predictions, score_predictions  # noqa: E402
from hf_vadapter.evaluation.runner import METRICS_NAME, PREDICTIONS_NAME  # noqa: E402
from hf_vadapter.training.dtype_choice import choose_language_model_dtype  # noqa: E402


def contextual_rows(rows: List[Dict], captions: Dict[str, str]) -> List[Dict]:
    """The VQA rows with the caption of their image (`captions`: image id -> text) put before the question."""
    return [
        {**row, "prompt": with_caption(row["prompt"], captions[row["image_id"]])}
        for row in rows
        if row["task"] == "vqa"
    ]


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument("--seed", type=int, default=0, help="the seed the scenes were built with")
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--heldout-images", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=126)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    evaluations = [args.output_dir / "eval" / split / PREDICTIONS_NAME for split in ("test", HELDOUT_SPLIT)]
    if not all(path.exists() for path in [args.output_dir / "adapter", *evaluations]):
        message = (f"No quickstart run in {args.output_dir}: run `bash scripts/quickstart.sh` first (or pass "
                   "--output-dir).")
        print(message)
        return message
    torch.set_num_threads(args.threads)
    model = VisionAdapterForCausalLM.from_pretrained(args.output_dir / "adapter").eval()
    processor = VisionAdapterProcessor.from_pretrained(args.output_dir / "adapter")
    dtype = choose_language_model_dtype()
    if not model.adapter.reaches_into_lm:
        model.cast_language_model(dtype)
    tokenizer = processor.tokenizer
    lines = [
        f"Machine: {machine()}; LM in {str(dtype).replace('torch.', '')}; checkpoint "
        f"`{args.output_dir / 'adapter'}`; VQA exact match in %.",
        "",
        "| split | context | " + " | ".join(QUESTION_TYPES)
        + " | caption tokens per image | added prompt tokens per question |",
        "|---|---|" + "---|" * len(QUESTION_TYPES) + "---|---|",
    ]
    for split, size in (("test", args.test_images), (HELDOUT_SPLIT, args.heldout_images)):
        folder = args.output_dir / "eval" / split
        evaluated = [json.loads(line) for line in (folder / PREDICTIONS_NAME).open() if line.strip()]
        plain = json.loads((folder / METRICS_NAME).read_text())
        rows = list(build_synthetic_dataset(split, size, args.image_size, args.seed))
        if [row["example_id"] for row in rows] != [row["example_id"] for row in evaluated]:
            raise SystemExit(f"{folder} was not evaluated on these scenes: pass the run's --seed and image counts.")
        own = {row["image_id"]: row["prediction"] for row in evaluated if row["task"] == "caption"}
        reference = {row["image_id"]: row["target"] for row in evaluated if row["task"] == "caption"}
        questions = [row for row in rows if row["task"] == "vqa"]
        prompt_tokens = statistics.mean(len(tokenizer(row["prompt"])["input_ids"]) for row in questions)
        lines.append(f"| {split} | none (the evaluation's answers) | "
                     + " | ".join(f"{100 * plain[f'vqa_accuracy_{kind}']:.0f}" for kind in QUESTION_TYPES)
                     + " | 0 | 0 |")
        for name, captions in (("own caption", own), ("reference caption", reference)):
            with_context = contextual_rows(rows, captions)
            predictions = generate_predictions(model, processor, with_context, batch_size=args.batch_size,
                                               max_new_tokens=32, description=f"{split}, {name}")
            scores = score_predictions(with_context, predictions)
            decoded = statistics.mean(len(tokenizer(text)["input_ids"]) for text in captions.values())
            added = statistics.mean(len(tokenizer(row["prompt"])["input_ids"]) for row in with_context) - prompt_tokens
            lines.append(f"| {split} | {name} | "
                         + " | ".join(f"{100 * scores[f'vqa_accuracy_{kind}']:.0f}" for kind in QUESTION_TYPES)
                         + f" | {decoded:.1f} | {added:.1f} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
