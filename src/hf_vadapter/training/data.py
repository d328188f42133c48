"""Turn `DataArguments` into a training and an evaluation `datasets.Dataset` in the example schema.

Built-in data (synthetic scenes, bundled photos), the readers of `hf_vadapter.data` (imagefolder, COCO captions,
VQAv2) and data sets saved with `datasets` all arrive here; text-only instructions are appended for joint training.
"""

import logging
from pathlib import Path
from typing import Optional, Tuple

import datasets

from ..data import (
    build_photo_dataset,
    build_synthetic_dataset,
    read_coco_captions,
    read_imagefolder,
    read_vqa_v2,
    to_example_schema,
    validate_example_dataset,
)
from ..modeling.errors import InvalidDatasetError
from .arguments import DataArguments
from .collator import image_flags
from .instructions import load_instruction_dataset

logger = logging.getLogger(__name__)


def _read_files(kind: str, data_dir: Optional[str], annotations: Optional[str], questions: Optional[str]):
    if kind == "imagefolder":
        if not data_dir:
            raise ValueError("dataset='imagefolder' needs data_dir (the folder with metadata.jsonl).")
        return read_imagefolder(data_dir)
    if kind == "coco":
        if not (data_dir and annotations):
            raise ValueError("dataset='coco' needs data_dir (the images) and annotations_file (captions_*.json).")
        return read_coco_captions(annotations, data_dir)
    if not (data_dir and annotations and questions):
        raise ValueError("dataset='vqav2' needs data_dir (the COCO images), questions_file and annotations_file.")
    return read_vqa_v2(questions, annotations, data_dir)


def _load_from_disk(path: str):
    try:
        return datasets.load_from_disk(path)
    except IndexError as error:  # what `datasets` raises for a data set saved with no rows (no shards)
        raise InvalidDatasetError(
            f"{path} holds a data set saved with no rows, which `datasets` cannot open. Save it with at least one row."
        ) from error


def _saved_split(path: str, split: str) -> datasets.Dataset:
    loaded = _load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path} has the splits {list(loaded)}, not {split!r}.")
        return loaded[split]
    return loaded


def _keep_tasks(ds: datasets.Dataset, args: DataArguments) -> datasets.Dataset:
    tasks = set(args.task_list())
    if set(ds.unique("task")) <= tasks:
        return ds
    return ds.filter(lambda task: task in tasks, input_columns="task")


def _first(ds: Optional[datasets.Dataset], count: Optional[int]) -> Optional[datasets.Dataset]:
    if ds is None or count is None or count >= len(ds):
        return ds
    return ds.select(range(count))


def load_splits(args: DataArguments) -> Tuple[datasets.Dataset, Optional[datasets.Dataset]]:
    """(train, eval) data sets in the example schema; eval is None when the source has no evaluation part."""
    kind = args.dataset
    train, evaluation = None, None
    if kind == "synthetic":
        shared = dict(
            image_size=args.render_size,
            seed=args.synthetic_seed,
            tasks=args.task_list(),
            question_types=args.question_type_list(),
        )
        train = build_synthetic_dataset(args.train_split, args.num_train_images, **shared)
        if args.num_eval_images > 0:
            evaluation = build_synthetic_dataset(args.eval_split, args.num_eval_images, **shared)
    elif kind == "photos":
        # A handful of real photos: the same rows train and evaluate (a smoke test of real images).
        train = evaluation = build_photo_dataset()
    elif kind in ("imagefolder", "coco", "vqav2"):
        train = _read_files(kind, args.data_dir, args.annotations_file, args.questions_file)
        if args.eval_data_dir or args.eval_annotations_file:
            evaluation = _read_files(
                kind,
                args.eval_data_dir or args.data_dir,
                args.eval_annotations_file or args.annotations_file,
                args.eval_questions_file or args.questions_file,
            )
        elif args.eval_holdout > 0:
            holdout = min(args.eval_holdout, len(train) - 1)
            evaluation = train.select(range(len(train) - holdout, len(train)))
            train = train.select(range(len(train) - holdout))
    else:
        path = Path(kind)
        train = to_example_schema(_saved_split(str(path), args.train_split), f"{path} ({args.train_split})")
        loaded = _load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict) and args.eval_split in loaded:
            evaluation = to_example_schema(loaded[args.eval_split], f"{path} ({args.eval_split})")
    validate_example_dataset(train)
    train = _first(_keep_tasks(train, args), args.max_train_samples)
    check_training_rows(train, args)
    if evaluation is not None:
        validate_example_dataset(evaluation)
        evaluation = _first(_keep_tasks(evaluation, args), args.max_eval_samples)
    if args.instruction_data:
        instructions = _first(load_instruction_dataset(args.instruction_data), args.max_instruction_samples)
        logger.info("Mixing %d text-only instruction rows into %d training rows.", len(instructions), len(train))
        train = datasets.concatenate_datasets([train, instructions.cast(train.features)])
    return train, evaluation


def check_training_rows(train: datasets.Dataset, args: DataArguments) -> None:
    """Refuse an empty training set up front, and warn about image rows that have no image (they train as text)."""
    if len(train) == 0:
        raise InvalidDatasetError(
            f"The training data is empty (dataset={args.dataset!r}, tasks={args.task_list()}, "
            f"max_train_samples={args.max_train_samples}). Check the data source and the task filter."
        )
    missing = image_flags(train).count(False)
    if missing:
        logger.warning(
            "%d of %d training rows have no image (image=None): they train as text-only rows. Give them their "
            "images, or drop them if that is not intended.",
            missing,
            len(train),
        )


def load_eval_split(args: DataArguments, split: Optional[str] = None) -> datasets.Dataset:
    """One evaluation split for `hf-vadapter evaluate`: `split` of the source (default: `args.eval_split`)."""
    split = split or args.eval_split
    kind = args.dataset
    if kind == "synthetic":
        ds = build_synthetic_dataset(
            split,
            args.num_eval_images,
            image_size=args.render_size,
            seed=args.synthetic_seed,
            tasks=args.task_list(),
            question_types=args.question_type_list(),
        )
    elif kind == "photos":
        ds = build_photo_dataset()
    elif kind in ("imagefolder", "coco", "vqav2"):
        if args.eval_data_dir or args.eval_annotations_file:
            ds = _read_files(
                kind,
                args.eval_data_dir or args.data_dir,
                args.eval_annotations_file or args.annotations_file,
                args.eval_questions_file or args.questions_file,
            )
        else:
            ds = _read_files(kind, args.data_dir, args.annotations_file, args.questions_file)
    else:
        ds = to_example_schema(_saved_split(kind, split), f"{kind} ({split})")
    validate_example_dataset(ds)
    return _first(_keep_tasks(ds, args), args.max_eval_samples)
