"""The three argument dataclasses of a training run, and parsing them from a YAML/JSON file, flags, or both.

`ModelArguments` says which bases and which adapter, `DataArguments` which data, and
`VisionAdapterTrainingArguments` is `transformers.TrainingArguments` with the few switches this library adds (the
feature cache, generation-based evaluation, the CSV log and the loss curve) and defaults that fit a vision adapter
(`remove_unused_columns=False`, since the collator needs the raw example columns).

    model_args, data_args, training_args = parse_arguments(["config.yaml", "--learning_rate", "1e-3"])

A file gives the base values and flags override them. The same dataclasses are built directly from Python.
"""

import argparse
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..modeling.adapter_config import AdapterConfig
from ..modeling.adapters import ADAPTER_REGISTRY
from ..modeling.errors import AdapterConfigError
from ..modeling.processing_vadapter import IMAGE_PLACEMENTS

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
DATASET_KINDS = ("synthetic", "photos", "imagefolder", "coco", "vqav2")


@dataclass
class ModelArguments:
    """Which frozen bases to join, and the adapter between them."""

    vision_model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "The frozen vision tower: a Hub id or a local folder."}
    )
    text_model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "The frozen causal LM: a Hub id or a local folder."}
    )
    vision_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the tower."})
    text_revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the LM."})
    adapter_type: str = field(
        default="mlp_projector",
        metadata={"help": f"Adapter family, one of {sorted(ADAPTER_REGISTRY)}."},
    )
    adapter_config: Union[dict, str, None] = field(
        default=None,
        metadata={
            "help": "The adapter's fields: a JSON object string, or a path to a JSON/YAML file (a mapping in a config "
            "file). Example: '{\"num_layers\": 2, \"feature_layers\": [-2]}'."
        },
    )
    image_size: Optional[int] = field(
        default=None, metadata={"help": "Side of the square images fed to the tower (default: its processor's)."}
    )
    image_token: str = field(default="<image>", metadata={"help": "The placeholder string of prompts."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap prompts in the LM's chat template as one user turn, when it has one."}
    )
    image_placement: str = field(
        default="start",
        metadata={
            "help": "Where the image goes in prompts without a placeholder: 'start' (before the text) or 'end' "
            "(after it, so the visual tokens can attend to the question).",
            "choices": list(IMAGE_PLACEMENTS),
        },
    )
    dtype: Optional[str] = field(
        default=None, metadata={"help": "dtype of the frozen bases ('float32', 'bfloat16', 'float16'); default fp32."}
    )
    language_model_dtype: Optional[str] = field(
        default=None,
        metadata={
            "help": "Run only the frozen LM in this dtype: 'auto' (bfloat16 where a start-up measurement finds it "
            "faster, else float32: CPUs without native bf16 run it tens of times slower) or a dtype name such as "
            "'bfloat16'; the tower and a prefix adapter keep fp32."
        },
    )
    attn_implementation: Optional[str] = field(default=None, metadata={"help": "Attention backend of the LM."})
    init_adapter_from: Optional[str] = field(
        default=None,
        metadata={
            "help": "Start the adapter from a previous run's output folder or checkpoint (progressive stages): every "
            "adapter tensor whose name and shape match is loaded."
        },
    )

    def __post_init__(self) -> None:
        if self.adapter_type not in ADAPTER_REGISTRY:
            raise AdapterConfigError(
                f"Unknown adapter_type {self.adapter_type!r}; this hf_vadapter knows {sorted(ADAPTER_REGISTRY)}."
            )

    def adapter_config_dict(self) -> Dict[str, Any]:
        """The adapter's fields as a dict: from `adapter_config` (dict, JSON string, or JSON/YAML file), or empty."""
        value = self.adapter_config
        if value is None or value == "":
            return {}
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, str) and value.strip().startswith("{"):
            return json.loads(value)
        path = Path(str(value))
        if not path.is_file():
            raise AdapterConfigError(
                f"adapter_config={value!r} is neither a JSON object nor an existing JSON/YAML file."
            )
        loaded = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        if not isinstance(loaded, dict):
            raise AdapterConfigError(f"{path} must hold a mapping of adapter fields, got {type(loaded).__name__}.")
        return loaded

    def build_adapter_config(self) -> AdapterConfig:
        """The adapter config dataclass. For a family with a stage handoff (`supports_stage_handoff`, such as
        PaLM2-VAdapter), a config naming the previous stage's checkpoint in `stage1_name_or_path` is built with
        `from_previous_stage`, so that it starts from that checkpoint (the paper's progressive handoff)."""
        values = self.adapter_config_dict()
        values.pop("adapter_type", None)
        config_class = ADAPTER_REGISTRY[self.adapter_type][0]
        previous = values.get("stage1_name_or_path")
        if previous and config_class.supports_stage_handoff:
            return config_class.from_previous_stage(previous, **values)
        return config_class.from_dict(values)

    def torch_dtype(self, name: Optional[str] = "dtype"):
        """The torch dtype named by the field `name` (`dtype` or `language_model_dtype`), or None when unset."""
        import torch

        value = getattr(self, name)
        if value in (None, "", "auto"):
            return None
        if not isinstance(getattr(torch, value, None), torch.dtype):
            raise ValueError(f"{name}={value!r} is not a torch dtype name such as 'float32' or 'bfloat16'.")
        return getattr(torch, value)


@dataclass
class DataArguments:
    """Which examples to train and evaluate on (all end up in the example schema of `hf_vadapter.data`)."""

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "'synthetic' (generated shape scenes), 'photos' (bundled photos), 'imagefolder', 'coco', 'vqav2', "
            "or the path of a data set saved with `datasets` (`save_to_disk`) in the example schema."
        },
    )
    data_dir: Optional[str] = field(
        default=None, metadata={"help": "imagefolder: the folder; coco/vqav2: the training image folder."}
    )
    annotations_file: Optional[str] = field(
        default=None, metadata={"help": "coco: the captions JSON; vqav2: the annotations JSON (training)."}
    )
    questions_file: Optional[str] = field(default=None, metadata={"help": "vqav2: the questions JSON (training)."})
    eval_data_dir: Optional[str] = field(default=None, metadata={"help": "Like data_dir, for evaluation."})
    eval_annotations_file: Optional[str] = field(default=None, metadata={"help": "Like annotations_file, for eval."})
    eval_questions_file: Optional[str] = field(default=None, metadata={"help": "Like questions_file, for eval."})
    train_split: str = field(default="train", metadata={"help": "Split trained on (synthetic or a saved DatasetDict)."})
    eval_split: str = field(default="validation", metadata={"help": "Split evaluated on."})
    num_train_images: int = field(default=1000, metadata={"help": "synthetic: images of the training split."})
    num_eval_images: int = field(default=50, metadata={"help": "synthetic: images of the evaluation split."})
    render_size: int = field(default=224, metadata={"help": "synthetic: pixel size of the rendered scenes."})
    synthetic_seed: int = field(default=0, metadata={"help": "synthetic: the seed the scenes are drawn from."})
    tasks: str = field(default="caption,vqa", metadata={"help": "Tasks kept, comma-separated: caption, vqa."})
    question_types: Optional[str] = field(
        default=None, metadata={"help": "synthetic: VQA question types kept, comma-separated (default: all)."}
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})
    eval_holdout: int = field(
        default=0,
        metadata={"help": "For file formats without eval files: hold out this many training rows for evaluation."},
    )
    max_length: int = field(default=256, metadata={"help": "Longest token sequence; text is cut, never images."})
    instruction_data: Optional[str] = field(
        default=None,
        metadata={
            "help": "Text-only instructions mixed into training (joint training): 'builtin' for the shipped set, or "
            "the path of an Alpaca-style JSON file (a list of {instruction, input, output})."
        },
    )
    max_instruction_samples: Optional[int] = field(
        default=None, metadata={"help": "Keep only the first N instruction rows."}
    )
    describe_then_answer: bool = field(
        default=False,
        metadata={
            "help": "Describe, then answer: every training row that is not a caption gets its image's reference "
            "caption before the prompt as context, and the saved processor's `describe_prompt` makes generation "
            "describe each image first and answer after the model's own description (docs/describe_then_answer.md)."
        },
    )
    caption_share: Optional[float] = field(
        default=None,
        metadata={
            "help": "Repeat the training caption rows until they make up about this share of the training rows "
            "(between 0 and 1, e.g. 0.5); the other rows appear once per epoch. With describe_then_answer the "
            "answers come from the model's own descriptions, so the captions carry what it binds "
            "(docs/describe_then_answer.md)."
        },
    )

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_KINDS and not Path(self.dataset).exists():
            raise ValueError(
                f"dataset={self.dataset!r} is none of {list(DATASET_KINDS)} and not an existing folder of a data set "
                "saved with `datasets`."
            )
        if self.caption_share is not None and not 0.0 < self.caption_share < 1.0:
            raise ValueError(
                f"caption_share={self.caption_share!r} must lie strictly between 0 and 1 (the share of training rows "
                "that are captions, e.g. 0.5), or be None to keep the data's own mix."
            )

    def task_list(self) -> Tuple[str, ...]:
        return tuple(task.strip() for task in self.tasks.split(",") if task.strip())

    def question_type_list(self) -> Optional[Tuple[str, ...]]:
        if not self.question_types:
            return None
        return tuple(kind.strip() for kind in self.question_types.split(",") if kind.strip())


def _default_report_to() -> str:
    installed = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    return "tensorboard" if installed else "none"


@dataclass
class VisionAdapterTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the feature cache, generation-based evaluation and the run's CSV log / loss curve.

    Defaults changed from `TrainingArguments`: `remove_unused_columns=False` (the collator reads the example
    columns), and `report_to="auto"`, which means TensorBoard when it is installed and nothing otherwise.
    """

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every data set column: the collator needs them. Leave it False."}
    )
    report_to: Union[None, str, List[str]] = field(
        default="auto",
        metadata={"help": "Integrations to log to; 'auto' is TensorBoard when installed, else none."},
    )
    use_feature_cache: bool = field(
        default=False,
        metadata={
            "help": "Compute the frozen tower's features once, store them with `datasets` (Arrow, memory-mapped) and "
            "train from them instead of from pixels."
        },
    )
    feature_cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where the feature cache lives (default: $HF_HOME/hf_vadapter/features)."},
    )
    feature_cache_dtype: str = field(
        default="float16",
        metadata={"help": "Storage dtype of cached features.", "choices": ["float16", "float32", "bfloat16"]},
    )
    feature_cache_batch_size: int = field(default=32, metadata={"help": "Images per tower forward when caching."})
    generation_eval: bool = field(
        default=True,
        metadata={
            "help": "At each evaluation, generate answers and score them: CIDEr and BLEU for captions, VQAv2 "
            "accuracy (overall and per question type) for VQA."
        },
    )
    generation_max_new_tokens: int = field(default=32, metadata={"help": "Longest generated answer (tokens)."})
    generation_num_beams: int = field(default=1, metadata={"help": "Beams for evaluation generation (1 = greedy)."})
    generation_max_samples: Optional[int] = field(
        default=None, metadata={"help": "Generate for at most this many evaluation rows (default: all)."}
    )
    csv_log: bool = field(default=True, metadata={"help": "Append every logged value to <output_dir>/log.csv."})
    loss_curve: bool = field(default=True, metadata={"help": "Write <output_dir>/loss_curve.png at the end."})
    max_train_minutes: Optional[float] = field(
        default=None,
        metadata={
            "help": "Wall-clock budget of the training loop: stop when it is spent or at max_steps, whichever comes "
            "first; the cosine schedule then decays over the budget too (lr_scheduler_type must be 'cosine')."
        },
    )
    time_reserve_steps: int = field(
        default=0,
        metadata={
            "help": "With max_train_minutes: stop early enough to leave this many steps' worth of time (at the "
            "measured mean step time) for work after training, such as evaluation."
        },
    )

    def __post_init__(self):
        if self.report_to == "auto":
            self.report_to = _default_report_to()
        super().__post_init__()
        if self.max_train_minutes is not None and self.lr_scheduler_type != "cosine":
            raise ValueError(
                f"max_train_minutes decays the learning rate over the time budget with a cosine schedule; set "
                f"lr_scheduler_type='cosine' (got {self.lr_scheduler_type!r})."
            )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, VisionAdapterTrainingArguments)


def argument_parser(add_help: bool = True) -> HfArgumentParser:
    """The parser of the three dataclasses (what `hf-vadapter train --help` shows)."""
    return HfArgumentParser(ARGUMENT_CLASSES, add_help=add_help)


def read_config_file(path: Union[str, Path]) -> Dict[str, Any]:
    """A YAML or JSON config file as a flat dict of argument values."""
    path = Path(path)
    values = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values, got {type(values).__name__}.")
    return values


def _given_flags(parser: HfArgumentParser, argv: Sequence[str]) -> Dict[str, Any]:
    """Only the flags actually written in `argv`, typed as the parser types them (no defaults, nothing required)."""
    overrides = HfArgumentParser(ARGUMENT_CLASSES, add_help=False)
    for action in overrides._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    namespace, unknown = overrides.parse_known_args(list(argv))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return vars(namespace)


def parse_arguments(
    argv: Optional[Sequence[str]] = None, values: Optional[Dict[str, Any]] = None
) -> Tuple[ModelArguments, DataArguments, VisionAdapterTrainingArguments]:
    """Parse `argv`: an optional leading YAML/JSON config file, then flags that override its values.

    `values` (a dict, as a config file holds) may be given instead of or besides a file; flags still win.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argument_parser()
    merged: Dict[str, Any] = dict(values or {})
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix in CONFIG_SUFFIXES:
        merged.update(read_config_file(argv.pop(0)))
    if not merged:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    merged.update(_given_flags(parser, argv))
    return tuple(parser.parse_dict(merged))

