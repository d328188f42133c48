"""The `hf-vadapter` command line.

Every subcommand is one function decorated with `@command(name, help)`: it receives its own argparse parser to fill
and returns the handler that runs it (the handler gets the parsed namespace, whose `argv` holds the subcommand's raw
arguments, and returns an exit code). Adding a subcommand is adding one such function.

    hf-vadapter train config.yaml --learning_rate 1e-3     # or only flags; a `stages:` file runs progressive stages
    hf-vadapter evaluate --checkpoint runs/exp1 --dataset synthetic --split test --output_dir runs/exp1/eval
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Handler = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], Handler]
COMMANDS: Dict[str, Tuple[str, Configure, Optional[Callable[[], List[argparse.ArgumentParser]]]]] = {}


def command(name: str, help: str, parents: Optional[Callable[[], List[argparse.ArgumentParser]]] = None):
    """Register `configure(parser) -> handler` as the subcommand `name`; `parents()` gives parsers (built with
    `add_help=False`) whose arguments the subcommand's parser inherits, such as an `HfArgumentParser`."""

    def register(configure: Configure) -> Configure:
        COMMANDS[name] = (help, configure, parents)
        return configure

    return register


def optional_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` with no argument required (a config file may supply them; the handler checks)."""
    for action in parser._actions:
        action.required = False
    return parser


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(
        prog="hf-vadapter",
        description="Parameter-efficient vision-language adapters between a frozen vision tower and a frozen LM.",
    )
    parser.add_argument("--version", action="version", version=f"hf-vadapter {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, configure, parents) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, parents=parents() if parents else [])
        sub.set_defaults(handler=configure(sub))
        accept_both_spellings(sub)
    return parser


def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Let every `--long-flag` also be written `--long_flag` and the other way round, as transformers users write
    `--max_new_tokens` and shell users `--max-new-tokens`."""
    for action in list(parser._actions):
        for option in list(action.option_strings):
            if not option.startswith("--"):
                continue
            body = option[2:]
            for other in ("--" + body.replace("-", "_"), "--" + body.replace("_", "-")):
                if other not in parser._option_string_actions:
                    action.option_strings.append(other)
                    parser._option_string_actions[other] = action


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    args.argv = argv[argv.index(args.command) + 1 :]
    from .modeling.errors import VisionAdapterError

    try:
        return int(args.handler(args) or 0)
    except VisionAdapterError as error:  # our typed errors already say what is wrong and what to do
        print(f"hf-vadapter {args.command}: error: {error}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------- train


def _training_flags() -> List[argparse.ArgumentParser]:
    from .training.arguments import argument_parser

    return [optional_flags(argument_parser(add_help=False))]


@command(
    "train",
    help="Train an adapter with the HF Trainer (a YAML/JSON config file and/or flags).",
    parents=_training_flags,
)
def train_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument(
        "config",
        nargs="?",
        help="YAML/JSON file of argument values (flags override it). A file with a `stages:` list trains "
        "progressive stages in order.",
    )
    parser.epilog = "Every TrainingArguments flag works as well (see the transformers docs)."

    def run(args: argparse.Namespace) -> int:
        from .training.arguments import CONFIG_SUFFIXES, parse_arguments, read_config_file
        from .training.run import run_training
        from .training.stages import run_stages

        raw = list(args.argv)
        if raw and not raw[0].startswith("-") and Path(raw[0]).suffix in CONFIG_SUFFIXES:
            values = read_config_file(raw[0])
            if "stages" in values:
                runs = run_stages(values, raw[1:])
                print(json.dumps({run.output_dir: run.eval_metrics for run in runs}, indent=1, default=float))
                return 0
        result = run_training(*parse_arguments(raw))
        print(json.dumps({"output_dir": result.output_dir, **result.train_metrics, **result.eval_metrics}, indent=1))
        return 0

    return run


# ---------------------------------------------------------------------------------------------- evaluate


@dataclass
class EvaluateArguments:
    """What `hf-vadapter evaluate` runs and where it writes."""

    checkpoint: str = field(
        metadata={"help": "A full checkpoint or an adapter-only one (a run's output_dir or a checkpoint-N folder)."}
    )
    output_dir: str = field(metadata={"help": "Where predictions.jsonl and metrics.json go."})
    vision_model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Adapter-only checkpoints: another copy of the tower it was trained on."}
    )
    text_model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Adapter-only checkpoints: another copy of the LM it was trained on."}
    )
    split: Optional[str] = field(default=None, metadata={"help": "Split to evaluate (default: --eval_split)."})
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (left-padded)."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest generated answer (tokens)."})
    num_beams: int = field(default=1, metadata={"help": "Beam search width (1 = greedy)."})
    device: Optional[str] = field(default=None, metadata={"help": "Device, e.g. cuda:0 (default: CPU)."})
    dtype: Optional[str] = field(default=None, metadata={"help": "Model dtype, e.g. bfloat16."})


def _evaluation_flags() -> List[argparse.ArgumentParser]:
    from transformers import HfArgumentParser

    from .training.arguments import DataArguments

    return [HfArgumentParser((EvaluateArguments, DataArguments), add_help=False)]


@command(
    "evaluate",
    help="Generate on a data split with a checkpoint and score it (predictions JSONL + metrics JSON).",
    parents=_evaluation_flags,
)
def evaluate_command(parser: argparse.ArgumentParser) -> Handler:
    def run(args: argparse.Namespace) -> int:
        import torch
        from transformers import HfArgumentParser

        from .evaluation.runner import evaluate_model, load_for_evaluation
        from .training.arguments import DataArguments
        from .training.data import load_eval_split

        evaluate_args, data_args = HfArgumentParser((EvaluateArguments, DataArguments)).parse_args_into_dataclasses(
            args=list(args.argv)
        )
        model, processor = load_for_evaluation(
            evaluate_args.checkpoint,
            vision_model_name_or_path=evaluate_args.vision_model_name_or_path,
            text_model_name_or_path=evaluate_args.text_model_name_or_path,
            dtype=getattr(torch, evaluate_args.dtype) if evaluate_args.dtype else None,
            device=evaluate_args.device,
        )
        dataset = load_eval_split(data_args, evaluate_args.split)
        metrics = evaluate_model(
            model,
            processor,
            dataset,
            output_dir=evaluate_args.output_dir,
            batch_size=evaluate_args.batch_size,
            max_new_tokens=evaluate_args.max_new_tokens,
            num_beams=evaluate_args.num_beams,
        )
        print(json.dumps(metrics, indent=1, sort_keys=True))
        return 0

    return run


# ---------------------------------------------------------------------------------------------- quickstart


@command("quickstart", help="The main job: train, evaluate, save and show the default adapter on packaged backbones.")
def quickstart_command(parser: argparse.ArgumentParser) -> Handler:
    from .quickstart import DEFAULT_OUTPUT_DIR

    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="Where the adapter, report and metrics go.")
    parser.add_argument("--quick", action="store_true", help="The small preset (about three minutes).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image-placement",
        choices=("start", "end"),
        default=None,
        help="Put the image before the question ('start') or after it ('end'); default: the preset's.",
    )
    parser.add_argument(
        "--describe-then-answer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Train questions after their image's caption and answer after the model's own description "
        "(docs/describe_then_answer.md; the preset's default). --no-describe-then-answer trains the plain recipe: "
        "bare questions, the data's own caption share.",
    )
    parser.add_argument(
        "--caption-share",
        type=float,
        default=None,
        help="Repeat the caption rows to this share of the training rows, between 0 and 1 (default: the preset's).",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="At most this many steps (default: the preset's).")
    parser.add_argument(
        "--no-clock",
        action="store_true",
        help="Train exactly --max-steps, cosine over them, ignoring the preset's training-time budget: the same run "
        "on any CPU (the clock otherwise decides how many steps fit).",
    )

    def run(args: argparse.Namespace) -> int:
        from .quickstart import run_quickstart

        overrides = {} if args.image_placement is None else {"image_placement": args.image_placement}
        if args.describe_then_answer is not None:
            overrides["describe_then_answer"] = args.describe_then_answer
            if not args.describe_then_answer:
                overrides["caption_share"] = None
        if args.caption_share is not None:
            if not 0.0 < args.caption_share < 1.0:
                parser.error(f"--caption-share must lie strictly between 0 and 1, got {args.caption_share}.")
            overrides["caption_share"] = args.caption_share
        if args.max_steps is not None:
            if args.max_steps < 1:
                parser.error(f"--max-steps must be at least 1, got {args.max_steps}.")
            overrides["max_steps"] = args.max_steps
        if args.no_clock:
            overrides["train_minutes"] = None
        run_quickstart(args.output_dir, quick=args.quick, seed=args.seed, **overrides)
        return 0

    return run


# ---------------------------------------------------------------------------------------------- convert


@command("convert", help="Convert the packaged backbones (SmolLM2-135M GGUF, DINOv2-small ONNX) into cached HF checkpoints.")
def convert_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("which", nargs="?", choices=("all", "smollm2", "dinov2"), default="all")
    parser.add_argument("--cache-dir", default=None, help="Where converted folders go (default: $HF_VADAPTER_CACHE).")
    parser.add_argument("--force", action="store_true", help="Convert again even when a verified folder exists.")

    def run(args: argparse.Namespace) -> int:
        from .conversion.dinov2_onnx import convert_dinov2
        from .conversion.smollm2_gguf import convert_smollm2

        converters = {"smollm2": convert_smollm2, "dinov2": convert_dinov2}
        for name in converters if args.which == "all" else [args.which]:
            print(converters[name](cache_dir=args.cache_dir, force=args.force))
        return 0

    return run


@command("convert-original", help="Convert an official eP-ALM or LLaMA-Adapter V2 checkpoint into an hf_vadapter adapter.")
def convert_original_command(parser: argparse.ArgumentParser) -> Handler:
    from .conversion.original_checkpoint import add_convert_original_arguments, run_convert_original

    add_convert_original_arguments(parser)
    return run_convert_original


# ---------------------------------------------------------------------------------------------- push


@command("push", help="Push an adapter-only checkpoint (with a model card) to the Hugging Face Hub.")
def push_command(parser: argparse.ArgumentParser) -> Handler:
    from .hub.push import add_push_arguments, run_push

    add_push_arguments(parser)
    return run_push


# ---------------------------------------------------------------------------------------------- generate


@command("generate", help="Answer a prompt about an image with a checkpoint (full or adapter-only).")
def generate_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("checkpoint", help="A checkpoint folder or Hub repo (full or adapter-only).")
    parser.add_argument("image", help="Path of the image.")
    parser.add_argument("prompt", nargs="?", default="Describe the image.", help="The question or instruction.")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--do-sample", action="store_true", help="Sample instead of greedy/beam decoding.")

    def run(args: argparse.Namespace) -> int:
        from PIL import Image, UnidentifiedImageError

        from .evaluation.generation import answer
        from .evaluation.runner import load_for_evaluation
        from .modeling.errors import InvalidImageError

        try:
            image = Image.open(args.image)
        except (OSError, UnidentifiedImageError) as error:
            raise InvalidImageError(f"Cannot read the image {args.image!r}: {error}") from error
        model, processor = load_for_evaluation(args.checkpoint)
        settings = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.do_sample)
        print(answer(model, processor, [image], [args.prompt], **settings)[0])
        return 0

    return run


if __name__ == "__main__":
    sys.exit(main())
