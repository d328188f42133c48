"""Do the default's captions bind colour to shape better than its answers do? (Decides "describe, then answer".)

    python benchmarks/caption_binding.py                      # reads outputs/quickstart/eval/<split>/
    python benchmarks/caption_binding.py --eval-dir runs/x/eval

If the model's own captions named each object's colour and shape correctly far more often than it answers colour and
shape questions, answering with its caption in context could carry that over. This reads the predictions an
evaluation already wrote (`predictions.jsonl` and `metrics.json`; no model runs) and, per split, compares:

- the evaluation's VQA accuracy on colour and shape questions;
- the captions' objects: each (colour, shape) pair named in the reference, in order, against the prediction's pairs
  (per object, and whole captions whose pairs all match).

A second table splits the colour and shape answers by the number of objects in the scene (read from the reference
caption of the same image): right, another object's colour or shape (the attribute is seen but bound to the wrong
object), or one absent from the scene (not read at all, e.g. a prior from the question's words).

The colour and shape vocabulary comes from the synthetic generator, to read its captions; nothing here trains.
"""

import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

from hf_vadapter.data.synthetic import COLORS, HELDOUT_SPLIT, SHAPES
from hf_vadapter.evaluation.runner import METRICS_NAME, PREDICTIONS_NAME

SPLITS = ("test", HELDOUT_SPLIT)


def object_pairs(caption: str) -> List[Tuple[str, str]]:
    """(colour, shape) of each object a caption names, in order: a colour word and the next shape word."""
    pairs, colour = [], None
    for word in re.findall(r"[a-z]+", caption.lower()):
        if word in COLORS:
            colour = word
        elif word in SHAPES and colour is not None:
            pairs.append((colour, word))
            colour = None
    return pairs


def caption_scores(rows: List[Dict]) -> Dict[str, float]:
    """Per object of the reference captions: is its colour / shape named at its place in the predicted caption; and
    the share of captions whose (colour, shape) pairs all match."""
    objects, colours, shapes, whole = 0, 0, 0, []
    for row in (r for r in rows if r["task"] == "caption"):
        reference, predicted = object_pairs(row["target"]), object_pairs(row["prediction"])
        whole.append(predicted == reference)
        predicted += [(None, None)] * (len(reference) - len(predicted))  # a missing object matches nothing
        objects += len(reference)
        colours += sum(r[0] == p[0] for r, p in zip(reference, predicted))
        shapes += sum(r[1] == p[1] for r, p in zip(reference, predicted))
    return {
        "caption_objects": objects,
        "caption_color": colours / max(objects, 1),
        "caption_shape": shapes / max(objects, 1),
        "caption_all_pairs": sum(whole) / max(len(whole), 1),
    }


def answer_errors(rows: List[Dict]) -> Dict[Tuple[str, int], Dict[str, float]]:
    """(question type, objects in the scene) -> answers: count, share right, share naming another object's attribute,
    share naming an attribute absent from the scene. Colour and shape questions only."""
    scene = {row["image_id"]: object_pairs(row["target"]) for row in rows if row["task"] == "caption"}
    outcomes: Dict[Tuple[str, int], List[str]] = {}
    for row in rows:
        kind = row["question_type"]
        if kind not in ("color", "shape") or row["image_id"] not in scene:
            continue
        present = [pair[0 if kind == "color" else 1] for pair in scene[row["image_id"]]]
        words = row["prediction"].lower().strip().rstrip(".").split()
        answer = words[0] if words else ""
        outcome = "right" if answer == row["target"].lower() else "other object" if answer in present else "absent"
        outcomes.setdefault((kind, len(present)), []).append(outcome)
    return {
        key: {"answers": len(v), **{o: v.count(o) / len(v) for o in ("right", "other object", "absent")}}
        for key, v in sorted(outcomes.items())
    }


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-dir", type=Path, default=Path("outputs/quickstart/eval"))
    args = parser.parse_args(argv)
    missing = [split for split in SPLITS if not (args.eval_dir / split / PREDICTIONS_NAME).is_file()]
    if missing:
        message = (f"No evaluation of {', '.join(missing)} under {args.eval_dir}: run `bash scripts/quickstart.sh` "
                   "first, or pass the --eval-dir of an `hf-vadapter` evaluation.")
        print(message)
        return message
    lines = [
        "| split | answers: colour | answers: shape | caption objects | captions: colour | captions: shape | "
        "captions: every pair right |",
        "|---|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        folder = args.eval_dir / split
        s = caption_scores([json.loads(line) for line in (folder / PREDICTIONS_NAME).open() if line.strip()])
        s.update(json.loads((folder / METRICS_NAME).read_text()))  # the evaluation's own VQA scores
        lines.append(
            f"| {split} | {100 * s['vqa_accuracy_color']:.0f}% | {100 * s['vqa_accuracy_shape']:.0f}% | "
            f"{s['caption_objects']} | {100 * s['caption_color']:.0f}% | {100 * s['caption_shape']:.0f}% | "
            f"{100 * s['caption_all_pairs']:.0f}% |"
        )
    lines += ["", "| split | question | objects in scene | answers | right | another object's | absent from scene |",
              "|---|---|---|---|---|---|---|"]
    for split in SPLITS:
        rows = [json.loads(line) for line in (args.eval_dir / split / PREDICTIONS_NAME).open() if line.strip()]
        for (kind, objects), e in answer_errors(rows).items():
            lines.append(f"| {split} | {kind} | {objects} | {e['answers']} | {100 * e['right']:.0f}% | "
                         f"{100 * e['other object']:.0f}% | {100 * e['absent']:.0f}% |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
