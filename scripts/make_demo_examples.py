"""Write the example images of the Gradio demo into spaces_demo/examples, with their index examples.json.

    python scripts/make_demo_examples.py

The demo runs without hf_vadapter (a Space needs only its own files), so its examples are files, made once here from
hf_vadapter's built-in data: bundled photos whose licence lets them ship (with their first written question) and
synthetic scenes (one question type each). Rerun it when that data changes; the output is deterministic.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hf_vadapter.data.photos import build_photo_dataset
from hf_vadapter.data.synthetic import build_synthetic_dataset

OUTPUT = Path(__file__).resolve().parent.parent / "spaces_demo" / "examples"
# Photos in the public domain or under CC0 (scikit-image's data notes), so the Space may redistribute them.
PHOTOS = {
    "chelsea": "scikit-image sample data (CC0, Stefan van der Walt)",
    "coffee": "scikit-image sample data (CC0, Rachel Michetti)",
    "astronaut": "scikit-image sample data (public domain, NASA)",
    "rocket": "scikit-image sample data (public domain, SpaceX launch photo)",
}
NUM_SCENES = 4
SCENE_SIZE = 224


def _entries(dataset, kind: str, wanted=None):
    """(image_id, first row index, VQA prompts) per image of `dataset`, in dataset order."""
    rows_by_image = {}
    for index, row in enumerate(dataset.remove_columns("image")):
        rows_by_image.setdefault(row["image_id"], []).append({**row, "index": index})
    for number, (image_id, rows) in enumerate(rows_by_image.items()):
        name = image_id.removeprefix("photo-")
        if wanted is not None and name not in wanted:
            continue
        questions = [row["prompt"] for row in rows if row["task"] == "vqa"]
        question = (questions[number % len(questions)] if kind == "scene" else questions[0]) if questions else None
        yield name, rows[0]["index"], question


def main() -> int:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    photos = build_photo_dataset()
    scenes = build_synthetic_dataset("test", NUM_SCENES, image_size=SCENE_SIZE)
    examples = []
    for kind, dataset, wanted in (("photo", photos, PHOTOS), ("scene", scenes, None)):
        for name, index, question in _entries(dataset, kind, wanted):
            file_name = f"{name}.jpg" if kind == "photo" else f"{name}.png"
            partial = OUTPUT / f".{os.getpid()}-{file_name}"  # written whole, then renamed into place
            dataset[index]["image"].save(partial, **({"format": "JPEG", "quality": 90} if kind == "photo" else
                                                      {"format": "PNG"}))
            os.replace(partial, OUTPUT / file_name)
            source = PHOTOS[name] if kind == "photo" else "hf_vadapter.data.synthetic, split 'test'"
            examples.append({"file": file_name, "question": question, "source": source})
    missing = set(PHOTOS) - {entry["file"].rsplit(".", 1)[0] for entry in examples}
    if missing:
        print(f"photos not available (install scikit-image): {sorted(missing)}", file=sys.stderr)
        return 1
    index = {"written_by": "scripts/make_demo_examples.py", "examples": examples}
    (OUTPUT / "examples.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(examples)} examples to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
