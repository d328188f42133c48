"""Ours against the peer a user would pick instead, transformers' `LlavaForConditionalGeneration`, in one run.

    HF_HUB_OFFLINE=1 python benchmarks/llava_peer.py     # 3 seeds, about 45 minutes of CPU time on 1 thread
    python benchmarks/llava_peer.py --steps 10 --train-images 20 --test-images 4 --repeats 1 --seeds 0  # a smoke run

Both join the packaged DINOv2-small and SmolLM2-135M-Instruct (fp32, frozen) with a new 2-layer MLP projector
(Linear-GELU-Linear, the only trainable part), and read the same features with LLaVA's defaults: the tower's
second-to-last layer (`vision_feature_layer=-2`), [CLS] dropped (`vision_feature_select_strategy="default"`),
126 px -> 9x9 = 81 visual tokens. They get the same prompts and token ids (one `VisionAdapterProcessor`, no chat
template; LLaVA's embeddings are resized for the added `<image>` token, as LLaVA's own conversion does), the same
rows in the same order (one seed), the same initial projector weights (LLaVA's, copied into ours), and the same
batch, steps, AdamW learning rate and schedule, through the HF Trainer. LLaVA trains as it ships: the tower runs
every step and the LM head gives full [B, S, V] logits. Ours trains from a feature cache of the tower, with the LM
head at supervised positions only. For information, a third model is our quickstart default adapter (tower layers
3, 6, 9, input LayerNorm, 3x3 pooling -> 9 tokens; its own initial weights), fp32 here.

Measured: the median train step (process CPU time of forward, backward and optimizer step, after warm-up steps), the
whole build + cache + train (CPU time), greedy generation tokens per CPU second (32 new tokens, batch 1 and 8, one
prompt; on one thread, the rate an idle core gives whatever else the machine runs), and VQA exact-match accuracy per
question type on small `test` and `test_heldout` splits. Ratios are ours / LLaVA.

Ours and LLaVA compute the same function from the same start, but not bit for bit (LLaVA's full-vocabulary logits
against our supervised rows), and AdamW turns rounding differences in near-zero gradients into full-size updates: the
two trajectories part after a few steps. One seed's accuracy gap is therefore mostly that chaos, so every model is
trained and evaluated on several seeds (each seed draws its own training and test scenes and initial projector), and
accuracy is compared by the mean over seeds of ours - LLaVA, with its standard error. Timings and losses are means
over seeds; generation is measured on the first seed only (the weights do not change its cost). On the first seed,
ours is also evaluated carrying LLaVA's trained projector, which checks that the two evaluation paths agree.

`main(argv)` returns the printed markdown. Everything loads from local folders; run with HF_HUB_OFFLINE=1 to be sure.
"""

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import backbone_paths, clock, machine, mean_and_standard_error, median_time  # noqa: E402

from hf_vadapter import MLPProjectorConfig, VisionAdapterForCausalLM, VisionAdapterProcessor
from hf_vadapter.data.synthetic import QUESTION_TYPES, build_synthetic_dataset
from hf_vadapter.evaluation.runner import evaluate_model
from hf_vadapter.modeling.safe_io import save_safetensors
from hf_vadapter.training.arguments import DataArguments, ModelArguments, VisionAdapterTrainingArguments
from hf_vadapter.training.collator import VisionAdapterCollator
from hf_vadapter.training.run import run_training

IMAGE_SIZE = 126  # 9x9 DINOv2 patches of 14 px
MAX_LENGTH = 128  # 81 placeholders + the longest caption row fit
TIMING_WARMUP_STEPS = 3  # first steps left out of the median step
SPLITS = ("test", "test_heldout")
LIKE_FOR_LIKE = {"feature_layers": [-2], "pool_size": 1, "input_norm": False}  # LLaVA's projector and features
QUICKSTART_DEFAULT = {"feature_layers": [3, 6, 9], "pool_size": 3}
INITIAL_PROJECTOR = "llava_initial_projector.safetensors"  # LLaVA's projector before training, in our key names
INFO = "ours, quickstart default (info)"


@dataclass
class Trained:
    """One trained model, its processor, and what training it cost."""

    model: torch.nn.Module
    processor: VisionAdapterProcessor
    step_s: float  # median train step, CPU time
    total_s: float  # build + cache + train, CPU time
    last_loss: float  # the last logged training loss (mean over its logging window)
    example_ids: List[str]  # the training rows, to check both models saw the same

    @property
    def num_image_tokens(self) -> int:
        return self.processor.num_image_tokens

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


class StepTimer(TrainerCallback):
    """Process CPU time of each optimizer step: forward, backward, clipping, optimizer and scheduler."""

    def __init__(self):
        self.times: List[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = clock("cpu")

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(clock("cpu") - self._start)

    def median(self) -> float:
        return statistics.median(self.times[TIMING_WARMUP_STEPS:] or self.times)


def log(message: str) -> None:
    print(f"[llava_peer] {message}", file=sys.stderr, flush=True)


def recipe(args, output_dir: str) -> Dict[str, object]:
    """The training settings both Trainers share."""
    return dict(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(args.steps // 10, 1),
        weight_decay=0.0,
        logging_steps=max(args.steps // 5, 1),
        save_strategy="no",
        eval_strategy="no",
        seed=args.seed,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )


def last_logged_loss(log_history: List[dict]) -> float:
    return [entry["loss"] for entry in log_history if "loss" in entry][-1]


def train_ours(args, name: str, adapter_config: Dict[str, object], workdir: str, init_from: Optional[str]) -> Trained:
    """Ours through `run_training`: feature cache of the tower, LM head at supervised positions only; the adapter
    starts from `init_from` (an adapter weights file) when given."""
    vision, text = backbone_paths()
    model_args = ModelArguments(
        vision_model_name_or_path=vision,
        text_model_name_or_path=text,
        adapter_type="mlp_projector",
        adapter_config=adapter_config,
        image_size=IMAGE_SIZE,
        use_chat_template=False,
        init_adapter_from=init_from,
    )
    data_args = DataArguments(
        dataset="synthetic",
        num_train_images=args.train_images,
        num_eval_images=0,
        render_size=IMAGE_SIZE,
        synthetic_seed=args.seed,
        max_length=MAX_LENGTH,
    )
    output = os.path.join(workdir, name)
    training_args = VisionAdapterTrainingArguments(
        **recipe(args, output),
        use_feature_cache=True,
        feature_cache_dir=os.path.join(output, "feature_cache"),
        feature_cache_dtype="float32",  # the features LLaVA sees, bit for bit
        csv_log=False,
        loss_curve=False,
    )
    timer = StepTimer()
    start = clock("cpu")
    run = run_training(model_args, data_args, training_args, callbacks=[timer])
    total = clock("cpu") - start
    trainer = run.trainer
    return Trained(trainer.model, trainer.processing_class, timer.median(), total,
                   last_logged_loss(trainer.state.log_history), list(trainer.train_dataset["example_id"]))


def build_llava(processor: VisionAdapterProcessor, seed: int) -> LlavaForConditionalGeneration:
    """LLaVA on the packaged tower and LM: their pretrained weights loaded, both frozen, a new projector."""
    vision, text = backbone_paths()
    tower = AutoModel.from_pretrained(vision)  # Dinov2Model
    lm = AutoModelForCausalLM.from_pretrained(text)  # LlamaForCausalLM, lm_head tied to the embeddings
    config = LlavaConfig(
        vision_config=tower.config,
        text_config=lm.config,
        image_token_index=processor.image_token_id,
        image_seq_length=processor.num_image_tokens,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    set_seed(seed)  # the projector's initial weights
    llava = LlavaForConditionalGeneration(config)
    llava.model.vision_tower.load_state_dict(tower.state_dict())
    llava.model.language_model.load_state_dict(lm.model.state_dict())
    llava.lm_head.load_state_dict(lm.lm_head.state_dict())
    llava.resize_token_embeddings(len(processor.tokenizer))  # room for the added `<image>` token
    llava.generation_config = lm.generation_config  # eos and pad ids, as ours takes them from the LM
    llava.requires_grad_(False)
    llava.model.multi_modal_projector.requires_grad_(True)
    return llava


def save_projector(llava: LlavaForConditionalGeneration, path: str) -> None:
    """LLaVA's projector weights under our MLP projector's names (linear_1 -> mlp.0, linear_2 -> mlp.2)."""
    ours_names = {"linear_1": "adapter.mlp.0", "linear_2": "adapter.mlp.2"}
    renamed = {}
    for key, value in llava.model.multi_modal_projector.state_dict().items():  # linear_{1,2}.{weight,bias}
        layer, kind = key.split(".")
        renamed[f"{ours_names[layer]}.{kind}"] = value
    save_safetensors(renamed, path)


def train_llava(args, workdir: str) -> Trained:
    """LLaVA through the plain HF Trainer: pixels every step, full logits."""
    vision, text = backbone_paths()
    processor = VisionAdapterProcessor.from_vision_text_pretrained(
        vision, text, num_image_tokens=(IMAGE_SIZE // 14) ** 2, image_size=IMAGE_SIZE, use_chat_template=False
    )
    train_rows = build_synthetic_dataset("train", args.train_images, image_size=IMAGE_SIZE, seed=args.seed)
    timer = StepTimer()
    start = clock("cpu")
    llava = build_llava(processor, args.seed)
    save_projector(llava, os.path.join(workdir, INITIAL_PROJECTOR))
    trainer = Trainer(
        model=llava,
        args=TrainingArguments(**recipe(args, os.path.join(workdir, "llava"))),
        train_dataset=train_rows,
        data_collator=VisionAdapterCollator(processor, max_length=MAX_LENGTH),
        callbacks=[timer],
    )
    trainer.train()
    total = clock("cpu") - start
    return Trained(llava, processor, timer.median(), total, last_logged_loss(trainer.state.log_history),
                   list(train_rows["example_id"]))


def tokens_per_second(trained: Trained, row: dict, batch_size: int, repeats: int) -> float:
    """Greedy tokens per CPU second generating 32 new tokens for `batch_size` copies of one row."""
    inputs = VisionAdapterCollator(trained.processor, with_targets=False)([row] * batch_size)
    settings = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False,
                    pad_token_id=trained.processor.tokenizer.pad_token_id)
    trained.model.eval()
    with torch.no_grad():
        seconds = median_time(lambda: trained.model.generate(**inputs, **settings), repeats)
    return 32 * batch_size / seconds


def vqa_accuracy(trained: Trained, split: str, num_images: int, seed: int) -> Dict[str, float]:
    """VQA exact-match accuracy, overall ("all") and per question type, on `num_images` scenes of `split`."""
    rows = build_synthetic_dataset(split, num_images, image_size=IMAGE_SIZE, seed=seed, tasks=("vqa",))
    metrics = evaluate_model(trained.model, trained.processor, rows, batch_size=16, max_new_tokens=8, progress=False)
    return {"all": metrics["vqa_accuracy"], **{kind: metrics[f"vqa_accuracy_{kind}"] for kind in QUESTION_TYPES}}


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def speed_table(results: Dict[str, dict]) -> List[str]:
    columns = ["visual tokens", "trainable", "step s", "build+train s", "train loss", "gen tok/s b1", "gen tok/s b8"]
    keys = ["tokens", "trainable", "step", "total", "loss", "gen1", "gen8"]
    formats = ["{:d}", "{:,d}", "{:.3f}", "{:.0f}", "{:.3f}", "{:.1f}", "{:.1f}"]

    def row(label: str, values: List[str]) -> str:
        return f"| {label} | " + " | ".join(values) + " |"

    lines = [row("model", columns), "|---" * (len(columns) + 1) + "|"]
    for name, result in results.items():
        lines.append(row(name, [fmt.format(result[key]) for key, fmt in zip(keys, formats)]))
        if name == "ours":
            lines.append(row("**ours / LLaVA**", [f"**{ratio(result[key], results['LLaVA'][key])}**" for key in keys]))
    return lines


def accuracy_table(results: Dict[str, dict]) -> List[str]:
    columns = ["all", *QUESTION_TYPES]
    lines = ["| split | model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for split in SPLITS:
        for name, result in results.items():
            cells = [f"{100 * result[split][kind]:.0f}%" for kind in columns]
            lines.append(f"| {split} | {name} | " + " | ".join(cells) + " |")
            if name == "ours":
                llava, ours = results["LLaVA"][split], result[split]
                cells = [f"**{ratio(ours[kind], llava[kind])}**" for kind in columns]
                lines.append(f"| {split} | **ours / LLaVA** | " + " | ".join(cells) + " |")
    return lines


def verdict(results: Dict[str, dict], per_seed: List[Dict[str, dict]]) -> str:
    """The targets: step <= 1.0x LLaVA's; accuracy no worse, judged on the mean paired gap over seeds. A negative
    mean gap within two standard errors is reported as such, not as met."""
    step = results["ours"]["step"] / results["LLaVA"]["step"]
    gaps = {split: paired_gap(per_seed, split) for split in SPLITS}
    no_worse = all(gap >= 0 for gap, _ in gaps.values())
    within_noise = all(gap >= -2 * error for gap, error in gaps.values())
    accuracy = "met" if no_worse else ("missed, within two standard errors" if within_noise else "missed")
    described = ", ".join(f"{split} {100 * gap:+.1f} +- {100 * error:.1f} points" for split, (gap, error) in gaps.items())
    return (f"Targets: step ours/LLaVA {step:.2f} (<= 1.00: {'met' if step <= 1.0 else 'missed'}); "
            f"VQA accuracy ours - LLaVA over {len(per_seed)} seeds {described} (no worse: {accuracy}).")


def measure(trained: Trained, args, prompt_row: Optional[dict]) -> dict:
    """Costs and accuracies of one trained model; generation speed only when `prompt_row` is given."""
    result = dict(tokens=trained.num_image_tokens, trainable=trained.trainable, step=trained.step_s,
                  total=trained.total_s, loss=trained.last_loss)
    if prompt_row is not None:
        result.update(gen1=tokens_per_second(trained, prompt_row, 1, args.repeats),
                      gen8=tokens_per_second(trained, prompt_row, 8, args.repeats))
    result.update(split_accuracies(trained, args))
    return result


def split_accuracies(trained: Trained, args) -> Dict[str, Dict[str, float]]:
    sizes = {"test": args.test_images, "test_heldout": args.heldout_images}
    return {split: vqa_accuracy(trained, split, sizes[split], args.seed) for split in SPLITS}


def with_llava_projector(llava: Trained, workdir: str) -> Trained:
    """Ours, untrained, carrying LLaVA's trained projector: LLaVA's weights behind our evaluation path."""
    path = os.path.join(workdir, "llava_trained_projector.safetensors")
    save_projector(llava.model, path)
    vision, text = backbone_paths()
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(
        vision, text, MLPProjectorConfig(**LIKE_FOR_LIKE), image_size=IMAGE_SIZE
    )
    model.load_vision_adapter(path)
    return Trained(model, llava.processor, 0.0, 0.0, float("nan"), llava.example_ids)


def same_weights_line(seed_results: Dict[str, dict], seed: int) -> str:
    """Whether ours, carrying LLaVA's trained projector, scores what LLaVA scored on the same seed."""
    llava, ours = seed_results["LLaVA"], seed_results["LLaVA"]["same_weights"]
    agree = all(ours[split] == llava[split] for split in SPLITS)
    numbers = ", ".join(
        f"{split} {100 * ours[split]['all']:.0f}% vs LLaVA's {100 * llava[split]['all']:.0f}%" for split in SPLITS
    )
    if agree:
        return (f"Same weights, same scores: ours carrying LLaVA's trained projector (seed {seed}) scores exactly what "
                f"LLaVA scores on every question type ({numbers}), so the evaluation paths agree and the gaps above "
                "come from the training trajectories.")
    return (f"Same weights, other answers: ours carrying LLaVA's trained projector (seed {seed}) scores {numbers}; the "
            "evaluation paths differ.")


def run_seed(args, prompt_row: Optional[dict]) -> Dict[str, dict]:
    """Train LLaVA, ours and the quickstart default on `args.seed`, and measure each. With `prompt_row` (the first
    seed), also generation speed, and ours carrying LLaVA's trained projector (`same_weights`)."""
    results: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as workdir:
        initial_projector = os.path.join(workdir, INITIAL_PROJECTOR)  # written by train_llava
        trainers = (
            ("LLaVA", lambda: train_llava(args, workdir)),
            ("ours", lambda: train_ours(args, "ours", LIKE_FOR_LIKE, workdir, initial_projector)),
            (INFO, lambda: train_ours(args, "ours_quickstart", QUICKSTART_DEFAULT, workdir, None)),
        )
        seen = None
        for name, train in trainers:
            log(f"seed {args.seed}, {name}: training")
            trained = train()
            if seen is not None and trained.example_ids != seen:
                raise RuntimeError(f"{name} trained on other rows than LLaVA.")
            seen = trained.example_ids
            log(f"seed {args.seed}, {name}: generation and accuracy")
            results[name] = measure(trained, args, prompt_row)
            if name == "LLaVA" and prompt_row is not None:
                log(f"seed {args.seed}: ours with LLaVA's trained projector")
                results[name]["same_weights"] = split_accuracies(with_llava_projector(trained, workdir), args)
            del trained
    return results


def mean_over_seeds(per_seed: List[Dict[str, dict]]) -> Dict[str, dict]:
    """Each model's numbers averaged over seeds; generation speeds from the seed that measured them."""
    merged: Dict[str, dict] = {}
    for name, first in per_seed[0].items():
        runs = [seed_results[name] for seed_results in per_seed]
        merged[name] = {key: (statistics.mean(run[key] for run in runs) if key in ("step", "total", "loss") else value)
                        for key, value in first.items() if key not in SPLITS}
        for split in SPLITS:
            merged[name][split] = {kind: statistics.mean(run[split][kind] for run in runs) for kind in first[split]}
    return merged


def paired_gap(per_seed: List[Dict[str, dict]], split: str) -> Tuple[float, float]:
    """Mean over seeds of ours - LLaVA overall accuracy on `split`, and its standard error (0 for one seed)."""
    return mean_and_standard_error([seed["ours"][split]["all"] - seed["LLaVA"][split]["all"] for seed in per_seed])


def seed_table(per_seed: List[Dict[str, dict]], seeds: List[int]) -> List[str]:
    lines = ["| seed | split | LLaVA | ours | ours - LLaVA |", "|---|---|---|---|---|"]
    for seed, results in zip(seeds, per_seed):
        for split in SPLITS:
            llava, ours = results["LLaVA"][split]["all"], results["ours"][split]["all"]
            lines.append(f"| {seed} | {split} | {100 * llava:.0f}% | {100 * ours:.0f}% | {100 * (ours - llava):+.0f} |")
    for split in SPLITS:
        gap, error = paired_gap(per_seed, split)
        lines.append(f"| **mean** | {split} | | | **{100 * gap:+.1f} +- {100 * error:.1f}** |")
    return lines


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps of each training run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine, 10%% warm-up)")
    parser.add_argument("--train-images", type=int, default=80, help="training scenes (6 rows each)")
    parser.add_argument("--test-images", type=int, default=20, help="test scenes (5 questions each)")
    parser.add_argument("--heldout-images", type=int, default=20, help="test_heldout scenes (5 questions each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls (after one warm-up)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="a full training and evaluation of every model per seed")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/llava_peer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    first = args.seeds[0]
    prompt_row = build_synthetic_dataset("test", 1, image_size=IMAGE_SIZE, seed=first, tasks=("vqa",))[0]
    per_seed = [
        run_seed(argparse.Namespace(**{**vars(args), "seed": seed}), prompt_row if seed == first else None)
        for seed in args.seeds
    ]
    results = mean_over_seeds(per_seed)
    lines = [
        f"machine: {machine()}; command: {command.strip()}",
        f"settings: {IMAGE_SIZE} px, fp32, {args.steps} steps x batch {args.batch} on {args.train_images} scenes "
        f"({6 * args.train_images} rows, same rows and order for all; LLaVA and ours from the same initial "
        f"projector), AdamW lr {args.lr:g} cosine; seeds {', '.join(map(str, args.seeds))}; step = median CPU s after "
        f"{TIMING_WARMUP_STEPS} warm-up steps, mean over seeds; generation: 32 new tokens per CPU s, prompt "
        f"{prompt_row['prompt']!r}, seed {first}",
        "",
        *speed_table(results),
        "",
        f"VQA exact match, mean over {len(args.seeds)} seeds ({5 * args.test_images} test and "
        f"{5 * args.heldout_images} test_heldout questions per seed):",
        "",
        *accuracy_table(results),
        "",
        "Overall accuracy per seed, and the mean paired gap with its standard error (points):",
        "",
        *seed_table(per_seed, args.seeds),
        "",
        verdict(results, per_seed),
        "",
        same_weights_line(per_seed[0], first),
    ]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
