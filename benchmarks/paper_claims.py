"""The papers' claims, on our data: PaLM2-VAdapter, LLaMA-Adapter V2 and eP-ALM ablations on the synthetic scenes.

    python benchmarks/paper_claims.py       # defaults: ~25 min of CPU on 1 thread (43 min wall, shared CPU)
    python benchmarks/paper_claims.py --steps 4 --eval-every 2 --eval-images 2 --stage1-steps 2   # smoke pass
    python benchmarks/paper_claims.py --arms palm2_stage1 palm2_pretrained palm2_random palm2_stage1_6layer \
        perceiver mlp_projector --seed 1 --results outputs/paper_claims.jsonl     # one seed of claims a-c
    python benchmarks/paper_claims.py --seeds-table outputs/paper_claims.jsonl   # claims over every seed run so far

Every arm trains on the same backbones (DINOv2-small + SmolLM2-135M-Instruct, 126 px), the same rows in the same
order, for the same steps and batch, from the same seed, with the same optimizer: AdamW with the PaLM2-VAdapter
paper's settings (lr 5e-4, betas 0.9/0.999, weight decay 1e-4, constant lr), also for LLaMA-Adapter V2 and eP-ALM,
so that only the adapter differs. Every arm (stage 1 too) reaches that lr by a linear warm-up from 0 over
--warmup-steps steps and clips the gradient norm to --max-grad-norm: without them the PaLM2-VAdapter arms spiked
early. Training reads cached tower features (`get_vision_features`): only the adapter and the LM run per step.
Rows: the captions and the five question types of the synthetic train split, one epoch, shuffled once with the seed.
The validation loss (over every supervised token of a fixed validation set) is taken every --eval-every steps; at the
end each arm answers the questions of a few test and test_heldout images (greedy), scored by exact match per question
type.

With --results, each arm's curve and scores are appended to a JSON-lines file; --seeds-table then decides claims
a-c over all seeds in it, each check as a mean paired difference with its standard error (a seed draws its own
scenes, row order and initialisation).

The tiny LM of PaLM2-VAdapter is SmolLM2-135M-Instruct cut to its first --tiny-layers decoder layers (with its
embeddings and final norm), saved once as a LlamaForCausalLM folder next to the converted SmolLM2: no smaller LM of
that family is packaged. "LM-pretrained" starts from that folder; "stage-1" first trains it (the whole tiny LM and an
attentional pooler) on the same rows for --stage1-steps steps, then hands it over (`PaLM2VAdapterConfig.from_stage1`).
"""

import argparse
import gc
import json
import math
import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from transformers import get_constant_schedule_with_warmup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import adapter_configs, backbone_paths, machine, mean_and_standard_error  # noqa: E402
from epalm_backward import clock  # noqa: E402

from hf_vadapter import (  # noqa: E402
    EPALMConfig,
    LlamaAdapterV2Config,
    PaLM2VAdapterConfig,
    PerceiverResamplerConfig,
    VisionAdapterForCausalLM,
    VisionAdapterProcessor,
)
from hf_vadapter.data.synthetic import build_synthetic_dataset  # noqa: E402
from hf_vadapter.evaluation import generate_predictions, score_predictions  # noqa: E402
from hf_vadapter.modeling.base_preprocessors import load_image_processor  # noqa: E402
from hf_vadapter.modeling.processing_vadapter import resize_image_processor  # noqa: E402

IMAGE_SIZE = 126
ROWS_PER_IMAGE = 6  # a caption and one question of each of the five types
QUESTION_TYPES = ("color", "shape", "count", "yes_no", "position")
REPO = Path(__file__).resolve().parent.parent

ARMS = {
    "palm2_stage1": "PaLM2-VAdapter, tiny LM from stage 1, 1-layer resampler",
    "palm2_pretrained": "PaLM2-VAdapter, tiny LM LM-pretrained, 1-layer resampler",
    "palm2_random": "PaLM2-VAdapter, tiny LM random, 1-layer resampler",
    "palm2_stage1_6layer": "PaLM2-VAdapter, tiny LM from stage 1, 6-layer resampler",
    "perceiver": "perceiver resampler, 6 layers",
    "mlp_projector": "MLP projector (quickstart default)",
    "llama_adapter_zero": "LLaMA-Adapter V2, zero-init gates",
    "llama_adapter_random": "LLaMA-Adapter V2, random-init gates",
    "epalm": "eP-ALM (default)",
}


# ------------------------------------------------------------------------------------------------ backbones


def tiny_lm_folder(num_layers: int) -> str:
    """SmolLM2-135M-Instruct cut to its first `num_layers` decoder layers, saved once as a local checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = backbone_paths()[1]
    folder = Path(source).parent / f"smollm2-135m-instruct-first{num_layers}"
    if not (folder / "config.json").exists():
        lm = AutoModelForCausalLM.from_pretrained(source)
        lm.model.layers = lm.model.layers[:num_layers]
        lm.config.num_hidden_layers = num_layers
        staging = tempfile.mkdtemp(dir=folder.parent)
        lm.save_pretrained(staging)
        AutoTokenizer.from_pretrained(source).save_pretrained(staging)
        os.replace(staging, folder)  # the whole folder or nothing
    return str(folder)


def adapter_config(arm: str, tiny_lm: str, stage1: Optional[str], tokens: int):
    """The adapter config of an arm; the stage-1 arms need the stage-1 checkpoint folder."""
    palm2 = dict(num_visual_tokens=tokens, tiny_lm_name_or_path=tiny_lm)
    return {
        "palm2_stage1": lambda: PaLM2VAdapterConfig.from_stage1(stage1),
        "palm2_pretrained": lambda: PaLM2VAdapterConfig(**palm2),
        "palm2_random": lambda: PaLM2VAdapterConfig(tiny_lm_init="random", **palm2),
        "palm2_stage1_6layer": lambda: PaLM2VAdapterConfig.from_stage1(stage1, resampler_depth=6),
        "perceiver": lambda: PerceiverResamplerConfig(depth=6, num_latents=tokens),
        "mlp_projector": lambda: adapter_configs(IMAGE_SIZE)["mlp_projector"],
        # Our data has images only; disjoint groups would train the early fusion alone and leave the random late
        # gates untrained, so every adapter parameter trains on every batch here.
        "llama_adapter_zero": lambda: LlamaAdapterV2Config(num_visual_tokens=tokens, disjoint_groups=False),
        "llama_adapter_random": lambda: LlamaAdapterV2Config(num_visual_tokens=tokens, disjoint_groups=False),
        "epalm": lambda: EPALMConfig(),
    }[arm]()


def build(text_model: str, config, seed: int) -> VisionAdapterForCausalLM:
    torch.manual_seed(seed)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(
        backbone_paths()[0], text_model, config, image_size=IMAGE_SIZE
    )
    return model.train()


def randomise_gates(model: VisionAdapterForCausalLM, seed: int) -> None:
    """LLaMA-Adapter's "rand-init attention" ablation: every gate drawn from N(0, 1) instead of zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gates in (model.adapter.prompt_gates, model.adapter.visual_gates):  # [K, nH], [E, nH]
            gates.copy_(torch.randn(gates.shape, generator=generator))


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Split:
    """Rows (prompt, target, image index, question type) and the pixels of their images [N_img, 3, H, W]."""

    rows: List[Dict]
    pixel_values: torch.Tensor
    examples: List[Dict] = field(default_factory=list)  # schema rows with images, for generation

    @classmethod
    def load(cls, split: str, num_images: int, seed: int, image_processor, keep_examples: bool = False) -> "Split":
        dataset = build_synthetic_dataset(split, num_images, image_size=IMAGE_SIZE, seed=seed)
        image_ids = list(dict.fromkeys(dataset["image_id"]))
        index = {image_id: i for i, image_id in enumerate(image_ids)}
        columns = dataset.remove_columns("image").to_list()
        rows = [dict(prompt=r["prompt"], target=r["target"], image=index[r["image_id"]],
                     question_type=r["question_type"]) for r in columns]
        images = [dataset[i]["image"] for i in range(0, len(dataset), ROWS_PER_IMAGE)]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        examples = [dataset[i] for i in range(len(dataset)) if columns[i]["task"] == "vqa"] if keep_examples else []
        return cls(rows, pixel_values, examples)


class FeatureCache:
    """Tower features per split and per feature selection, computed once per run (the tower is shared and frozen)."""

    def __init__(self, splits: Dict[str, Split]):
        self.splits = splits
        self.features: Dict[Tuple, torch.Tensor] = {}

    def get(self, model: VisionAdapterForCausalLM, split: str) -> torch.Tensor:
        config = model.config.adapter
        key = (split, tuple(config.feature_layers), config.feature_select, config.feature_norm)
        if key not in self.features:
            pixels = self.splits[split].pixel_values
            self.features[key] = torch.cat([model.get_vision_features(chunk) for chunk in pixels.split(32)])
        return self.features[key]  # [N_img, T, L, S, Dv]


def encode(processor, rows: List[Dict], features: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Token ids with one expanded placeholder per prompt where the processor places images (as the collator does),
    the supervised target, and the cached features of the rows' images."""
    prompts = [processor.with_placeholders(row["prompt"], 1) for row in rows]
    batch = dict(processor(text=prompts, text_target=[row["target"] for row in rows]))
    batch["image_features"] = features[[row["image"] for row in rows]]
    return batch


def by_task(rows: List[Dict]) -> Tuple[List[Dict], List[Dict]]:
    """(captions, questions). Batches never mix them: a caption is ~4x longer than a question, so a mixed batch
    would be mostly padding."""
    return [r for r in rows if r["question_type"] == "caption"], [r for r in rows if r["question_type"] != "caption"]


def train_batches(rows: List[Dict], batch: int, steps: int, seed: int) -> List[List[Dict]]:
    """The batches of every arm, in one seeded order: rows shuffled, batched by task (a last, incomplete batch of
    each task dropped), batches shuffled."""
    rng = random.Random(seed)
    rows = list(rows)
    rng.shuffle(rows)
    batches = [group[i : i + batch] for group in by_task(rows) for i in range(0, len(group) - batch + 1, batch)]
    rng.shuffle(batches)
    if len(batches) < steps:
        raise ValueError(f"{len(batches)} batches for {steps} steps; build more training images.")
    return batches[:steps]


# ------------------------------------------------------------------------------------------------ training


@dataclass
class Run:
    arm: str
    trainable: int
    total: int
    train_loss: List[float] = field(default_factory=list)
    val_steps: List[int] = field(default_factory=list)
    val_loss: List[float] = field(default_factory=list)
    step_seconds: List[float] = field(default_factory=list)  # process CPU time of each step
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)  # split -> score_predictions metrics

    @property
    def final_loss(self) -> float:
        return self.val_loss[-1]

    @property
    def step_time(self) -> float:
        return statistics.median(self.step_seconds)

    def steps_to(self, target: float) -> Optional[int]:
        """The first evaluated step after the start whose validation loss is <= target, or None."""
        return next((s for s, loss in zip(self.val_steps[1:], self.val_loss[1:]) if loss <= target), None)

    def accuracy(self, split: Optional[str] = None, question_type: Optional[str] = None) -> float:
        """VQA exact match (0-100) on one split, or the mean of both splits."""
        key = "vqa_accuracy" + (f"_{question_type}" if question_type else "")
        splits = [split] if split else list(self.scores)
        return 100 * statistics.mean(self.scores[s][key] for s in splits)


@torch.no_grad()
def validation_loss(model: VisionAdapterForCausalLM, batches: List[Dict[str, torch.Tensor]]) -> float:
    """Mean loss over every supervised token of the validation batches."""
    model.eval()
    counts = [int((batch["labels"][:, 1:] != -100).sum()) for batch in batches]
    total = sum(model(**batch).loss.item() * count for batch, count in zip(batches, counts))
    model.train()
    return total / sum(counts)


def train(model, processor, arm: str, splits: Dict[str, Split], cache: FeatureCache, args) -> Run:
    """The plain loop every arm shares: same rows, order, batch, steps and optimizer settings."""
    trainable, total = model.get_nb_trainable_parameters()
    run = Run(arm, trainable, total)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, args.warmup_steps)  # linear from 0, then constant
    train_features, val_features = cache.get(model, "train"), cache.get(model, "validation")
    val = [encode(processor, rows, val_features) for rows in by_task(splits["validation"].rows)]
    batches = train_batches(splits["train"].rows, args.batch, args.steps, args.seed)
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            run.val_steps.append(step)
            run.val_loss.append(validation_loss(model, val))
        if step == args.steps:
            break
        batch = encode(processor, batches[step], train_features)
        start = clock("cpu")
        loss = model(**batch).loss
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.step_seconds.append(clock("cpu") - start)
        run.train_loss.append(loss.item())
    print(f"{arm:22} val loss {run.val_loss[0]:.3f} -> {run.final_loss:.3f}, step {run.step_time:.2f} s", flush=True)
    return run


def score(model, processor, run: Run, splits: Dict[str, Split], args) -> None:
    for split in ("test", "test_heldout"):
        rows = splits[split].examples
        predictions = generate_predictions(model, processor, rows, batch_size=args.eval_batch, max_new_tokens=4,
                                           progress=False)
        run.scores[split] = score_predictions(rows, predictions)


def run_stage1(tiny_lm: str, splits, cache, args, folder: str) -> Run:
    """PaLM2-VAdapter stage 1: the tiny LM and its attentional pooler learn the same rows; saved to `folder`."""
    config = PaLM2VAdapterConfig(stage=1, num_visual_tokens=args.visual_tokens)
    model = build(tiny_lm, config, args.seed)
    processor = VisionAdapterProcessor.for_model(model, use_chat_template=False)
    stage_args = argparse.Namespace(**{**vars(args), "steps": args.stage1_steps})
    run = train(model, processor, "palm2 stage 1 (tiny LM)", splits, cache, stage_args)
    model.save_adapter(folder, processor=processor)
    return run


def run_arm(arm: str, tiny_lm: str, stage1: Optional[str], splits, cache, args) -> Run:
    model = build(backbone_paths()[1], adapter_config(arm, tiny_lm, stage1, args.visual_tokens), args.seed)
    if arm == "llama_adapter_random":
        randomise_gates(model, args.seed)
    processor = VisionAdapterProcessor.for_model(model, use_chat_template=False)
    run = train(model, processor, arm, splits, cache, args)
    score(model, processor, run, splits, args)
    del model
    gc.collect()
    return run


# ------------------------------------------------------------------------------------------------ claims


@dataclass
class Claim:
    key: str
    title: str
    paper: str
    arms: Tuple[str, ...]
    checks: Callable[[Dict[str, Run], int], List[Tuple[str, bool]]]


def _claim_a(runs, steps):
    palm2, perceiver = runs["palm2_stage1"], runs["perceiver"]
    own = perceiver.steps_to(perceiver.final_loss)
    reached = palm2.steps_to(perceiver.final_loss)
    speedup = own / reached if reached else 0.0
    return [
        (f"reaches the perceiver's final validation loss {perceiver.final_loss:.3f} in >= 3x fewer steps "
         f"({reached if reached else f'> {steps}'} vs {own}; {speedup:.1f}x)", speedup >= 3),
        (f"lower final validation loss ({palm2.final_loss:.3f} vs {perceiver.final_loss:.3f})",
         palm2.final_loss < perceiver.final_loss),
        (f"higher VQA exact match ({palm2.accuracy():.1f} vs {perceiver.accuracy():.1f})",
         palm2.accuracy() > perceiver.accuracy()),
    ]


def _claim_b(runs, steps):
    stage1, pretrained, rand = (runs[f"palm2_{name}"] for name in ("stage1", "pretrained", "random"))
    return [
        (f"stage-1 init ends lower than LM-pretrained ({stage1.final_loss:.3f} vs {pretrained.final_loss:.3f})",
         stage1.final_loss < pretrained.final_loss),
        (f"LM-pretrained ends lower than random ({pretrained.final_loss:.3f} vs {rand.final_loss:.3f})",
         pretrained.final_loss < rand.final_loss),
        (f"stage-1 init has the best VQA exact match ({stage1.accuracy():.1f} vs {pretrained.accuracy():.1f} / "
         f"{rand.accuracy():.1f})", stage1.accuracy() > max(pretrained.accuracy(), rand.accuracy())),
    ]


def _claim_c(runs, steps):
    one, six = runs["palm2_stage1"], runs["palm2_stage1_6layer"]
    return [
        (f"1 layer ends lower ({one.final_loss:.3f} vs {six.final_loss:.3f})", one.final_loss < six.final_loss),
        (f"1 layer's VQA exact match is higher ({one.accuracy():.1f} vs {six.accuracy():.1f})",
         one.accuracy() > six.accuracy()),
    ]


def _claim_d(runs, steps):
    zero, rand = runs["llama_adapter_zero"], runs["llama_adapter_random"]
    return [
        (f"zero init starts lower ({zero.val_loss[0]:.3f} vs {rand.val_loss[0]:.3f})",
         zero.val_loss[0] < rand.val_loss[0]),
        (f"zero init ends lower ({zero.final_loss:.3f} vs {rand.final_loss:.3f})", zero.final_loss < rand.final_loss),
        (f"zero init's VQA exact match is higher ({zero.accuracy():.1f} vs {rand.accuracy():.1f})",
         zero.accuracy() > rand.accuracy()),
    ]


def _claim_e(runs, steps):
    epalm = runs["epalm"]
    others = {arm: run for arm, run in runs.items() if arm != "epalm"}
    cheapest = min(others, key=lambda arm: others[arm].step_time)
    return [
        (f"trains < 1% of the parameters ({100 * epalm.trainable / epalm.total:.2f}%)",
         epalm.trainable < 0.01 * epalm.total),
        (f"cheaper step than every other arm ({epalm.step_time:.2f} s vs {others[cheapest].step_time:.2f} s for "
         f"{cheapest}, the cheapest other)", epalm.step_time < others[cheapest].step_time),
    ]


CLAIMS = (
    Claim("a", "PaLM2-VAdapter (stage-1 tiny LM) vs a 6-layer perceiver resampler vs an MLP projector",
          "PaLM2-VAdapter converges about 3-4x faster than the perceiver resampler and ends better",
          ("palm2_stage1", "perceiver", "mlp_projector"), _claim_a),
    Claim("b", "Initialisation of the tiny LM: random vs LM-pretrained vs stage-1-aligned",
          "progressive alignment (stage 1) beats an LM-pretrained tiny LM, which beats a random one",
          ("palm2_stage1", "palm2_pretrained", "palm2_random"), _claim_b),
    Claim("c", "1-layer vs 6-layer resampler in front of the tiny LM",
          "one resampler layer is better than six",
          ("palm2_stage1", "palm2_stage1_6layer"), _claim_c),
    Claim("d", "LLaMA-Adapter V2 gates: zero init vs random init",
          "zero-initialised gating trains better than randomly initialised gates",
          ("llama_adapter_zero", "llama_adapter_random"), _claim_d),
    Claim("e", "eP-ALM's trainable fraction and step cost against the others",
          "eP-ALM trains under 1% of the parameters and is cheap to train (no backward below layer L)",
          tuple(ARMS), _claim_e),
)


def verdict(checks: List[Tuple[str, bool]]) -> str:
    passed = sum(ok for _, ok in checks)
    return "reproduced" if passed == len(checks) else "not reproduced" if passed == 0 else "partly reproduced"


# ------------------------------------------------------------------------------------------------ report


def plot(claim: Claim, runs: Dict[str, Run], out_dir: Path) -> Path:
    """Validation loss (left) and the train loss, moving average over 10 steps (right), per arm of the claim.

    Claim e plots the validation loss against the cumulative CPU time of training instead of the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm in claim.arms:
        run = runs[arm]
        if claim.key == "e":
            elapsed = [0.0] + [sum(run.step_seconds[:step]) for step in run.val_steps[1:]]
            left.plot(elapsed, run.val_loss, marker=".", label=ARMS[arm])
        else:
            left.plot(run.val_steps, run.val_loss, marker=".", label=ARMS[arm])
        window = [run.train_loss[max(0, i - 9) : i + 1] for i in range(len(run.train_loss))]
        right.plot(range(1, len(window) + 1), [statistics.mean(w) for w in window], label=ARMS[arm])
    left.set_xlabel("training CPU seconds" if claim.key == "e" else "step")
    left.set_ylabel("validation loss")
    right.set_xlabel("step")
    right.set_ylabel("train loss (moving average, 10 steps)")
    for axis in (left, right):
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"Claim {claim.key}: {claim.title}", fontsize=10)
    figure.tight_layout()
    path = out_dir / f"paper_claims_{claim.key}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report(runs: Dict[str, Run], stage1: Optional[Run], args, plots: Dict[str, Path]) -> str:
    questions = args.eval_images * len(QUESTION_TYPES)
    warmup = (f"linear warm-up from 0 over {args.warmup_steps} steps, then constant" if args.warmup_steps
              else "constant, no warm-up")
    clipping = (f"gradient norm clipped to {args.max_grad_norm:g}" if args.max_grad_norm > 0
                else "no gradient clipping")
    lines = [
        f"Machine: {machine()}. {args.steps} steps of batch {args.batch} per arm (stage 1: {args.stage1_steps} steps),"
        f" AdamW lr {args.lr:g} ({warmup}), weight decay {args.weight_decay:g}, {clipping}, seed {args.seed}; "
        f"{args.visual_tokens} visual tokens for the resamplers, PaLM2-VAdapter and LLaMA-Adapter V2; tiny LM = the "
        f"first {args.tiny_layers} layers of SmolLM2-135M-Instruct. Validation loss on "
        f"{args.val_images * ROWS_PER_IMAGE} rows every {args.eval_every} steps; VQA exact match on {questions} test "
        f"and {questions} held-out questions (one question is {100 / questions:.0f} points). Step times "
        "are the median process CPU time of a training step.",
        "",
    ]
    if stage1:
        lines += [f"Stage 1 (tiny LM + pooler, {stage1.trainable:,} trainable): validation loss "
                  f"{stage1.val_loss[0]:.3f} -> {stage1.final_loss:.3f}, median step {stage1.step_time:.2f} s.", ""]
    target = runs["perceiver"].final_loss if "perceiver" in runs else None
    header = ["arm", "trainable", "trainable %", "step s", "val loss start", "val loss end"]
    header += ["steps to perceiver's final"] if target is not None else []
    header += ["VQA EM test", "VQA EM held-out"]
    rows = []
    for arm, run in runs.items():
        row = [ARMS[arm], f"{run.trainable:,}", f"{100 * run.trainable / run.total:.2f}", f"{run.step_time:.2f}",
               f"{run.val_loss[0]:.3f}", f"{run.final_loss:.3f}"]
        if target is not None:
            reached = run.steps_to(target)
            row.append(str(reached) if reached is not None else f"> {args.steps}")
        rows.append(row + [f"{run.accuracy('test'):.1f}", f"{run.accuracy('test_heldout'):.1f}"])
    lines += [table(header, rows), ""]
    steps = next(iter(runs.values())).val_steps
    lines += ["Validation loss by step:", "",
              table(["arm"] + [str(s) for s in steps],
                    [[arm] + [f"{loss:.3f}" for loss in run.val_loss] for arm, run in runs.items()]), ""]
    lines += ["VQA exact match by question type, test / held-out:", "",
              table(["arm"] + list(QUESTION_TYPES),
                    [[arm] + [f"{run.accuracy('test', t):.0f} / {run.accuracy('test_heldout', t):.0f}"
                              for t in QUESTION_TYPES] for arm, run in runs.items()]), ""]
    for claim in CLAIMS:
        if not set(claim.arms) <= set(runs):
            continue
        checks = claim.checks(runs, args.steps)
        lines += [f"**Claim {claim.key}: {claim.title}.** Paper: {claim.paper}. "
                  f"**{verdict(checks).capitalize()}** here:", ""]
        lines += [f"- {'yes' if ok else 'no'}: {text}" for text, ok in checks]
        lines += ["", f"![claim {claim.key}]({Path(os.path.relpath(plots[claim.key], REPO)).as_posix()})", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ over seeds


def run_record(run: Run, args) -> Dict:
    """What --results keeps of one arm of one seed."""
    return {"arm": run.arm, "seed": args.seed, "steps": args.steps, "stage1_steps": args.stage1_steps,
            "val_steps": run.val_steps, "val_loss": run.val_loss, "step_time": run.step_time,
            "test": run.accuracy("test"), "test_heldout": run.accuracy("test_heldout")}


# Per claim of a-c: (label, arm the paper favours, arm it beats, quantity, lower is better).
SEED_CHECKS = {
    "a": [("PaLM2-VAdapter vs perceiver: mean validation loss over the run (convergence speed)",
           "palm2_stage1", "perceiver", "mean_loss", True),
          ("PaLM2-VAdapter vs perceiver: final validation loss", "palm2_stage1", "perceiver", "final_loss", True),
          ("PaLM2-VAdapter vs perceiver: VQA exact match", "palm2_stage1", "perceiver", "accuracy", False),
          ("PaLM2-VAdapter vs MLP projector: final validation loss", "palm2_stage1", "mlp_projector", "final_loss",
           True)],
    "b": [("stage-1 vs LM-pretrained tiny LM: final validation loss", "palm2_stage1", "palm2_pretrained",
           "final_loss", True),
          ("LM-pretrained vs random tiny LM: final validation loss", "palm2_pretrained", "palm2_random",
           "final_loss", True),
          ("stage-1 vs random tiny LM: VQA exact match", "palm2_stage1", "palm2_random", "accuracy", False)],
    "c": [("1-layer vs 6-layer resampler: final validation loss", "palm2_stage1", "palm2_stage1_6layer",
           "final_loss", True),
          ("1-layer vs 6-layer resampler: VQA exact match", "palm2_stage1", "palm2_stage1_6layer", "accuracy",
           False)],
}


def _quantity(record: Dict, name: str) -> float:
    if name == "mean_loss":
        return statistics.mean(record["val_loss"][1:])
    if name == "final_loss":
        return record["val_loss"][-1]
    return (record["test"] + record["test_heldout"]) / 2


def seeds_table(records: List[Dict]) -> str:
    """Claims a-c over every seed in `records`: per arm mean +- standard error, then each check as the mean paired
    difference (favoured arm minus the other, same seed) with its standard error. A check holds when the difference
    favours the paper by more than 2 standard errors, is reversed when it opposes it by more, else it is undecided."""
    by_arm: Dict[str, Dict[int, Dict]] = {}
    for record in records:
        by_arm.setdefault(record["arm"], {})[record["seed"]] = record
    steps = sorted({(r["steps"], r["stage1_steps"]) for r in records})
    rows = []
    for arm, seeds in by_arm.items():
        cells = [f"{m:.3f} +- {e:.3f}" for m, e in (mean_and_standard_error([_quantity(r, q) for r in seeds.values()])
                                                     for q in ("mean_loss", "final_loss"))]
        for split in ("test", "test_heldout"):
            mean, error = mean_and_standard_error([r[split] for r in seeds.values()])
            cells.append(f"{mean:.1f} +- {error:.1f}")
        rows.append([ARMS[arm], " ".join(str(s) for s in sorted(seeds)), *cells])
    lines = [f"Steps (stage 1 steps): {', '.join(f'{a} ({b})' for a, b in steps)}. Mean +- standard error over the "
             "seeds.", "",
             table(["arm", "seeds", "mean val loss over the run", "final val loss", "VQA EM test", "VQA EM held-out"],
                   rows), ""]
    for claim in CLAIMS:
        if claim.key not in SEED_CHECKS or not set(claim.arms) <= set(by_arm):
            continue
        outcomes = []
        for label, favoured, other, quantity, lower_better in SEED_CHECKS[claim.key]:
            seeds = sorted(set(by_arm[favoured]) & set(by_arm[other]))
            differences = [_quantity(by_arm[favoured][s], quantity) - _quantity(by_arm[other][s], quantity)
                           for s in seeds]
            mean, error = mean_and_standard_error(differences)
            favours = -mean if lower_better else mean
            outcome = "holds" if favours > 2 * error else "reversed" if favours < -2 * error else "undecided"
            outcomes.append((outcome, f"{label}: {mean:+.3f} +- {error:.3f} over {len(seeds)} seeds ({outcome})"))
        verdict_text = verdict([(text, outcome == "holds") for outcome, text in outcomes])
        lines += [f"**Claim {claim.key}: {claim.title}.** Paper: {claim.paper}. **{verdict_text.capitalize()}** "
                  "over the seeds (difference = favoured arm minus the other, same seed; holds when it favours the "
                  "paper by more than 2 standard errors):", ""]
        lines += [f"- {text}" for _, text in outcomes] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--stage1-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=10, help="linear lr warm-up from 0, then constant")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0: off)")
    parser.add_argument("--visual-tokens", type=int, default=16)
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--val-images", type=int, default=4, help="validation images (6 rows each)")
    parser.add_argument("--eval-images", type=int, default=8, help="test and held-out images (5 questions each)")
    parser.add_argument("--eval-batch", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "plots")
    parser.add_argument("--results", type=Path, help="append each arm's curve and scores to this JSON-lines file")
    parser.add_argument("--seeds-table", type=Path, help="print claims a-c over the seeds in this file and stop")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    """Train every arm, score it, plot each claim and return the markdown report (also printed)."""
    args = parse_args(argv)
    if args.seeds_table:
        markdown = seeds_table([json.loads(line) for line in args.seeds_table.read_text().splitlines() if line])
        print(markdown)
        return markdown
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    image_processor = resize_image_processor(load_image_processor(backbone_paths()[0]), IMAGE_SIZE)
    # One epoch; two batches more cover the incomplete batch of each task, which is dropped.
    train_images = math.ceil((max(args.steps, args.stage1_steps) + 2) * args.batch / ROWS_PER_IMAGE)
    splits = {
        "train": Split.load("train", train_images, args.seed, image_processor),
        "validation": Split.load("validation", args.val_images, args.seed, image_processor),
        "test": Split.load("test", args.eval_images, args.seed, image_processor, keep_examples=True),
        "test_heldout": Split.load("test_heldout", args.eval_images, args.seed, image_processor, keep_examples=True),
    }
    cache = FeatureCache(splits)
    tiny_lm = tiny_lm_folder(args.tiny_layers)
    runs: Dict[str, Run] = {}
    stage1_run = None
    with tempfile.TemporaryDirectory() as stage1:
        if any(arm.startswith("palm2_stage1") for arm in args.arms):
            stage1_run = run_stage1(tiny_lm, splits, cache, args, stage1)
        for arm in args.arms:
            runs[arm] = run_arm(arm, tiny_lm, stage1, splits, cache, args)
            if args.results:
                args.results.parent.mkdir(parents=True, exist_ok=True)
                with args.results.open("a") as handle:
                    handle.write(json.dumps(run_record(runs[arm], args)) + "\n")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plots = {claim.key: plot(claim, runs, args.out_dir) for claim in CLAIMS if set(claim.arms) <= set(runs)}
    markdown = report(runs, stage1_run, args, plots)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
