"""Accuracy against training steps and minutes for the quickstart's recipe: where does it cross 90% on colour and shape?

    python benchmarks/accuracy_curve.py                          # 3000 steps, a checkpoint every 500, 1 thread
    python benchmarks/accuracy_curve.py --steps 1000 --every 250
    python benchmarks/accuracy_curve.py --table                  # the results so far
    python benchmarks/accuracy_curve.py --recipe describe --steps 1200 --every 300 \
        --output-dir outputs/accuracy_curve_describe              # describe, then answer with 1 caption row in 6
    python benchmarks/accuracy_curve.py --rescore --checkpoints 1000 3000 --seen-images 100   # seen vs unseen scenes

One run of the quickstart's default (`--recipe default`), or of the recipes it replaced: `plain` (bare questions)
and `describe` (describe, then answer with the data's own caption share). Same preset, data, seed and LM dtype choice; `quickstart.training_arguments`),
with the step count raised and no wall-clock budget, so the cosine schedule spans all `--steps`. An adapter-only
checkpoint is saved every `--every` steps; each is evaluated on the VQA questions of the quickstart's `test` and
`test_heldout` scenes. Each row records the process CPU minutes spent training up to that checkpoint, which on a quiet
CPU is close to wall time with the same number of threads.

A checkpoint in the middle of the run was trained at a higher learning rate than a run that ends there, so the curve
shows what the recipe learns with more steps, not what a shorter quickstart would score at each point.

`--rescore` trains nothing: it scores the run's saved checkpoints again, adding with `--seen-images N` the first N
training scenes, the ones the adapter learned from. Seen scenes answered far better than test scenes mean the
recipe memorises its scenes, and more distinct scenes, not more steps, are what it lacks.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import torch
from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine  # noqa: E402

from hf_vadapter.conversion.dinov2_onnx import convert_dinov2  # noqa: E402
from hf_vadapter.conversion.smollm2_gguf import convert_smollm2  # noqa: E402
from hf_vadapter.data.synthetic import HELDOUT_SPLIT, QUESTION_TYPES, build_synthetic_dataset  # noqa: E402
from hf_vadapter.evaluation.runner import evaluate_model  # noqa: E402
from hf_vadapter.quickstart import PRESETS, training_arguments  # noqa: E402
from hf_vadapter.training.run import run_training  # noqa: E402

OUT = Path("outputs/accuracy_curve")
# Preset fields of each recipe: the quickstart's own, and the two it replaced.
RECIPES = {
    "default": {},
    "plain": {"describe_then_answer": False, "caption_share": None},
    "describe": {"describe_then_answer": True, "caption_share": None},
}
SPLITS = ("test", HELDOUT_SPLIT)


class CheckpointClock(TrainerCallback):
    """Process CPU seconds of training at each save (the feature cache is built before training starts)."""

    def __init__(self):
        self.started, self.cpu_s_at_step = None, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.process_time()

    def on_save(self, args, state, control, **kwargs):
        self.cpu_s_at_step[state.global_step] = time.process_time() - self.started


def evaluate_checkpoint(model, processor, folder: Path, preset, seed: int, seen_images: int = 0) -> Dict[str, Dict[str, float]]:
    """VQA accuracy per question type, the checkpoint's adapter weights in the trained model (same bases, dtypes);
    with `seen_images`, also on that many of the training scenes (split "train")."""
    model.load_vision_adapter(folder)
    model.eval()
    scores = {}
    sizes = {"test": preset.num_test_images, HELDOUT_SPLIT: preset.num_heldout_images, "train": seen_images}
    for split, size in sizes.items():
        if not size:
            continue
        questions = build_synthetic_dataset(split, size, image_size=preset.image_size, seed=seed, tasks="vqa")
        metrics = evaluate_model(model, processor, questions, batch_size=32, max_new_tokens=32, progress=False)
        scores[split] = {kind: metrics[f"vqa_accuracy_{kind}"] for kind in QUESTION_TYPES}
    return scores


def results_table(results: List[Dict]) -> List[str]:
    """Markdown rows per checkpoint; a column of seen training scenes when every row was scored on them."""
    header = " / ".join(QUESTION_TYPES)
    splits = SPLITS + (("train",) if results and all("train" in r for r in results) else ())
    names = {"train": "seen training scenes"}
    lines = ["| step | train CPU min | " + " | ".join(f"{names.get(split, split)} {header}" for split in splits) + " |",
             "|---|---|" + "---|" * len(splits)]
    for r in results:
        accuracy = [" / ".join(f"{100 * r[split][kind]:.0f}" for kind in QUESTION_TYPES) for split in splits]
        lines.append(f"| {r['step']} | {r['train_cpu_min']:.1f} | " + " | ".join(accuracy) + " |")
    return lines


def rescore(args, output: Path, preset) -> str:
    """Score saved checkpoints again (with the LM in the dtype the run chose), adding `--seen-images` training
    scenes; rows go to `rescored.jsonl`."""
    from hf_vadapter import VisionAdapterForCausalLM, VisionAdapterProcessor

    trained = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines() if line.strip()]
    runs = {row["step"]: row for row in trained}
    folder = output / "adapter"
    model = VisionAdapterForCausalLM.from_pretrained(folder)
    model.cast_language_model(getattr(torch, runs[args.checkpoints[0]]["lm_dtype"].replace("torch.", "")))
    processor = VisionAdapterProcessor.from_pretrained(folder)
    rows = []
    with open(output / "rescored.jsonl", "a") as results:
        for step in args.checkpoints:
            scores = evaluate_checkpoint(model, processor, folder / f"checkpoint-{step}", preset, args.seed,
                                         args.seen_images)
            row = {"step": step, "seed": args.seed, "train_cpu_min": runs[step]["train_cpu_min"],
                   "lm_dtype": str(model.language_model.dtype), **scores}
            results.write(json.dumps(row) + "\n")
            rows.append(row)
    table = "\n".join(results_table(rows))
    print(table)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=PRESETS["default"].num_train_images)
    parser.add_argument("--test-images", type=int, default=PRESETS["default"].num_test_images)
    parser.add_argument("--heldout-images", type=int, default=PRESETS["default"].num_heldout_images)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                        help="default: the quickstart's; plain: bare questions; describe: describe, then answer with "
                        "the data's own caption share (docs/describe_then_answer.md)")
    parser.add_argument("--output-dir", default=str(OUT))
    parser.add_argument("--table", action="store_true", help="print the results file as a table and stop")
    parser.add_argument("--rescore", action="store_true", help="score the saved --checkpoints again; no training")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[3000], help="steps to score with --rescore")
    parser.add_argument("--seen-images", type=int, default=0, help="with --rescore, also score this many "
                        "training scenes")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    results_file = output / "results.jsonl"
    if args.table:
        table = "\n".join(results_table([json.loads(line) for line in open(results_file) if line.strip()]))
        print(table)
        return table
    torch.set_num_threads(args.threads)
    preset = replace(PRESETS["default"], num_train_images=args.train_images, num_test_images=args.test_images,
                     num_heldout_images=args.heldout_images, **RECIPES[args.recipe])
    if args.rescore:
        return rescore(args, output, preset)
    model_args, data_args, training_args = training_arguments(
        preset, convert_dinov2(), convert_smollm2(), output, args.seed
    )
    training_args.max_steps, training_args.max_train_minutes, training_args.time_reserve_steps = args.steps, None, 0
    training_args.save_steps, training_args.save_total_limit = args.every, None
    clock = CheckpointClock()
    run = run_training(model_args, data_args, training_args, callbacks=[clock])
    model, processor = run.trainer.model, run.trainer.processing_class
    dtype = model.language_model.dtype
    dtype_name = str(dtype).replace("torch.", "")
    recipe = "describe, then answer; " if preset.describe_then_answer else ""
    recipe += f"caption rows {preset.caption_share:.0%} of the training rows; " if preset.caption_share else ""
    setting = (f"Machine: {machine()}. {recipe}LM in {dtype_name} (chosen at start-up by measurement); "
               f"{args.steps} steps of batch {preset.batch_size}, cosine over all of them, seed {args.seed}; "
               f"{preset.num_train_images} training scenes, VQA on {preset.num_test_images} test and "
               f"{preset.num_heldout_images} held-out scenes; accuracy in %.")
    print(setting, flush=True)
    rows = []
    output.mkdir(parents=True, exist_ok=True)
    with open(results_file, "a") as results:
        for step, cpu_s in sorted(clock.cpu_s_at_step.items()):
            folder = Path(training_args.output_dir) / f"checkpoint-{step}"
            scores = evaluate_checkpoint(model, processor, folder, preset, args.seed)
            row = {"step": step, "seed": args.seed, "train_cpu_min": cpu_s / 60, "lm_dtype": str(dtype), **scores}
            results.write(json.dumps(row) + "\n")
            results.flush()
            rows.append(row)
            print("\n".join(results_table([row])[2:]), flush=True)
    table = "\n".join([setting, "", *results_table(rows)])
    print(table)
    return table


if __name__ == "__main__":
    main()
