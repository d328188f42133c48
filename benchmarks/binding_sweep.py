"""Which lever makes the quickstart's adapter bind colour to shape? One harness, every arm on the same footing.

    python benchmarks/binding_sweep.py --arms base slots2 words2 words2_grid --steps 150      # screen
    python benchmarks/binding_sweep.py --arms base --steps 400 --seed 1                        # another seed
    python benchmarks/binding_sweep.py --table                                                 # the results so far

Every arm trains the quickstart's MLP projector setup (packaged DINOv2-small layers 3/6/9, 126 px, 3x3 cells, image
after the question, frozen SmolLM2-135M-Instruct) from the same cached tower features, on the same rows in the same
order, with the same optimiser, schedule, batch and seed; only the adapter's output differs:

- `base`: one free token per cell (the quickstart before this sweep);
- `slots<k>`: k free tokens per cell;
- `words<k>`: k tokens per cell, each a softmax mixture of the frozen LM's embeddings of the training captions'
  tokens (`token_vocabulary`);
- `..._grid`: each cell introduced by the LM's own words for its grid position (`cell_prefix_ids`);
- `..._prompt`: 8 learned free tokens after the cells (`num_prompt_tokens`);
- `..._bow`: plus a loss tying the word mixtures to the caption's tokens (an image-level bag of tokens);
- `..._distill`: the frozen LM reading the image's caption in words is a teacher (KL on the answer, layer-normed
  hidden states at the answer positions matched at layers 8/16/24);
- `..._pack`: all turns of an image (its questions and caption) in one multi-turn sequence;
- `..._lora`: LoRA (r 8) on the frozen LM's attention projections beside the adapter (`lora_for_language_model`);
- `..._focus<h>`: h focus tokens after the cells, each a mix of the cells' tokens weighted by how well each cell
  matches the question before the image (`num_focus_tokens`);
- `..._describe`: describe, then answer. Training questions carry their image's reference caption as context
  ("Context: <caption>" before the question, as `hf_vadapter.experts` puts it); at evaluation the model first
  captions each image and answers with that caption as context;
- `..._caps<p>`: the caption rows repeated until they are about p% of the training rows (`_describe` answers from the
  model's own caption, so its captions carry the binding; 1 row in 6 is a caption otherwise);
- `..._lr<x>`: peak learning rate x instead of 2e-3 (e.g. `base_lr6e-3`);
- `..._first`: the image before the question instead of after it.

Training uses images, prompts and targets only (the synthetic generator's per-object labels are never read).
Each arm reports VQA first-word accuracy per question type on `test` and `test_heldout` (unseen colour-shape pairs),
its step cost (process CPU seconds) relative to `base` measured in the same process, and CPU minutes of training.
The LM runs in bfloat16 where this CPU multiplies bf16 faster than fp32 (measured at start), else in fp32.
"""

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import backbone_paths, machine, mean_and_standard_error, with_caption  # noqa: E402
from epalm_backward import clock  # noqa: E402

from hf_vadapter import (  # noqa: E402
    EPALMConfig, LlamaAdapterV2Config, MLPProjectorConfig, PerceiverResamplerConfig, VisionAdapterForCausalLM,
    VisionAdapterProcessor, lora_for_language_model,
)
from hf_vadapter.data.synthetic import HELDOUT_SPLIT, QUESTION_TYPES, build_synthetic_dataset  # noqa: E402
from hf_vadapter.modeling.mlp_projector import caption_token_vocabulary, grid_position_prefixes  # noqa: E402
from hf_vadapter.modeling.safe_io import load_safetensors, save_safetensors  # noqa: E402
from hf_vadapter.training.caption_share import caption_copies  # noqa: E402
from hf_vadapter.training.dtype_choice import choose_language_model_dtype  # noqa: E402

IMAGE_SIZE, LAYERS, POOL, BATCH, LR, WARMUP = 126, [3, 6, 9], 3, 16, 2e-3, 30
OUT = Path("outputs/binding_sweep")


# The other families at their defaults (as `paper_claims.py` builds them: 16 visual tokens, every LLaMA-Adapter V2
# parameter trained on every batch since every row has an image).
FAMILIES = {
    "llama": lambda: LlamaAdapterV2Config(num_visual_tokens=16, disjoint_groups=False),
    "epalm": lambda: EPALMConfig(),
    "perceiver": lambda: PerceiverResamplerConfig(depth=6, num_latents=16),
}


def arm_config(name: str, tokenizer, captions: List[str]):
    base = name.split("_")[0]
    if base in FAMILIES:
        return FAMILIES[base]()
    fields = dict(feature_layers=LAYERS, pool_size=POOL)
    if base.startswith("slots"):
        fields["tokens_per_cell"] = int(base[len("slots"):])
    elif base.startswith("words"):
        fields["tokens_per_cell"] = int(base[len("words"):])
        fields["token_vocabulary"] = caption_token_vocabulary(tokenizer, captions)
    elif base != "base":
        raise SystemExit(f"unknown arm {name!r}")
    if "_prompt" in name:
        fields["num_prompt_tokens"] = 8
    focus = re.search(r"_focus(\d+)", name)
    if focus:
        fields["num_focus_tokens"] = int(focus.group(1))
    if "_grid" in name:
        fields["cell_prefix_ids"] = grid_position_prefixes(tokenizer, IMAGE_SIZE // 14 // POOL)
    return MLPProjectorConfig(**fields)


def cached_features(model, processor, datasets_by_split, seed: int) -> Dict[str, torch.Tensor]:
    """Tower features [N, 1, L, S, Dv] (fp16) of every image of every split, computed once per feature selection
    (the model's adapter's `feature_layers`, `feature_select`, `feature_norm`) and kept on disk."""
    adapter, default = model.config.adapter, MLPProjectorConfig(feature_layers=LAYERS, pool_size=POOL)
    selection = [(c.feature_layers, c.feature_select, c.feature_norm) for c in (adapter, default)]
    spec = "" if selection[0] == selection[1] else (  # the MLP's file keeps its old name
        f"-{'_'.join(map(str, adapter.feature_layers))}-{adapter.feature_select}-{'norm' if adapter.feature_norm else 'raw'}"
    )
    sizes = "-".join(f"{k}{len(v)}" for k, v in datasets_by_split.items())
    path = OUT / f"features-s{seed}-{sizes}{spec}.safetensors"
    if path.is_file():
        return load_safetensors(path)
    features = {}
    for split, rows in datasets_by_split.items():
        images = [row["image"] for row in rows]
        chunks = []
        for start in range(0, len(images), 64):
            pixels = processor.image_processor(images[start : start + 64], return_tensors="pt")["pixel_values"]
            chunks.append(model.get_vision_features(pixels).half())
            print(f"  features {split}: {start + len(pixels)}/{len(images)}", flush=True)
        features[split] = torch.cat(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(features, path)
    return features


def image_rows(dataset) -> List[Dict]:
    """One entry per image: its image and its rows (prompt, target, question type), in data set order."""
    by_image: Dict[str, Dict] = {}
    for row in dataset:
        entry = by_image.setdefault(row["image_id"], {"image": row["image"], "rows": []})
        entry["rows"].append({"prompt": row["prompt"], "target": row["target"], "type": row["question_type"]})
    return list(by_image.values())


def batch_of(processor, items, features, with_targets=True):
    prompts = [processor.with_placeholders(item["prompt"], 1) for item in items]
    targets = [item["target"] for item in items] if with_targets else None
    batch = dict(processor(text=prompts, text_target=targets))
    batch["image_features"] = features[[item["index"] for item in items]].float()
    return batch


def packed_batch(processor, images, features):
    """One sequence per image holding all its turns (questions and caption, in a seeded order): the image is encoded
    once and supervised at every answer. The first turn carries the image, as single-turn prompts do."""
    rows = []
    for image in images:
        prompt_ids, labels = [], []
        for turn, row in enumerate(image["rows"]):
            if turn == 0:
                ids = processor._prompt_ids(processor.with_placeholders(row["prompt"], 1), None)
            else:
                ids = processor.tokenizer(row["prompt"] + "\n", add_special_tokens=False)["input_ids"]
            target = processor._target_ids(row["target"])
            prompt_ids += ids + target
            labels += [-100] * len(ids) + target
        rows.append((prompt_ids, labels))
    width = max(len(ids) for ids, _ in rows)
    pad = processor.tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in rows]),
        "attention_mask": torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in rows]),
        "labels": torch.tensor([[-100] * (width - len(ids)) + lab for ids, lab in rows]),
        "image_features": features[[image["index"] for image in images]].float(),
    }


def caption_bag_loss(model, image_features, bags) -> torch.Tensor:
    """Binary cross-entropy between the caption's tokens (multi-hot over the token vocabulary, [B, V]) and the
    chance that some visual token of the image picks each token (noisy-OR over its mixtures, [B, V])."""
    probs = model.adapter.cell_token_logits(image_features).softmax(-1)  # [B, S'*k, V]
    picked = 1 - (1 - probs).clamp_min(1e-6).log().sum(1).exp()  # [B, V]
    return torch.nn.functional.binary_cross_entropy(picked.clamp(1e-6, 1 - 1e-6), bags)


DISTILL_LAYERS = (8, 16, 24)


def caption_teacher_loss(model, processor, items, batch, student, captions) -> torch.Tensor:
    """The frozen LM reading the image's caption in words is the teacher: KL to its answer distribution plus the
    distance between layer-normed hidden states at the answer positions (layers `DISTILL_LAYERS`). Caption rows are
    left to the plain loss."""
    keep = [i for i, item in enumerate(items) if item["type"] != "caption"]
    if not keep:
        return student.loss.new_zeros(())
    teacher = processor(
        text=[items[i]["prompt"] + "\n" + captions[items[i]["index"]] for i in keep],
        text_target=[items[i]["target"] for i in keep],
    )
    mask = teacher["attention_mask"]
    with torch.no_grad():
        out = model.language_model(
            input_ids=teacher["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            output_hidden_states=True, logits_to_keep=1,
        )
    at_teacher = teacher["labels"][:, 1:] != -100  # [Bt, St-1]: positions predicting an answer token
    at_student = batch["labels"][keep][:, 1:] != -100  # [Bt, Ss-1]
    loss = 0.0
    for layer in DISTILL_LAYERS:
        t = out.hidden_states[layer][:, :-1][at_teacher].float()  # [N, D]
        s = student.hidden_states[layer][keep][:, :-1][at_student].float()  # [N, D]
        loss = loss + nn.functional.mse_loss(nn.functional.layer_norm(s, s.shape[-1:]), nn.functional.layer_norm(t, t.shape[-1:]))
    final = model.language_model.get_output_embeddings()
    teacher_logits = final(out.hidden_states[-1][:, :-1][at_teacher]).float()  # [N, V]
    student_logits = student.logits[keep][:, :-1][at_student].float()  # [B, S, V] -> [N, V] at the answer tokens
    kl = nn.functional.kl_div(student_logits.log_softmax(-1), teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean")
    return loss / len(DISTILL_LAYERS) + kl


def train_arm(name, config, paths, features, train_items, args, dtype, bags=None, captions=None) -> Dict:
    torch.manual_seed(args.seed)
    model = VisionAdapterForCausalLM.from_vision_text_pretrained(*paths, config, image_size=IMAGE_SIZE)
    if model.adapter.reaches_into_lm:  # in-layer adapters train inside the LM: it stays in fp32 for them
        dtype = torch.float32
    else:
        model.cast_language_model(dtype)
    model.train()
    placement = "start" if "_first" in name else "end"
    processor = VisionAdapterProcessor.for_model(model, use_chat_template=False, image_placement=placement)
    if "_lora" in name:
        from peft import get_peft_model

        attention = ["q_proj", "k_proj", "v_proj", "o_proj"]
        model = get_peft_model(model, lora_for_language_model(model, attention, r=8, lora_dropout=0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    rate = re.search(r"_lr([0-9.e-]+)", name)
    optimizer = torch.optim.AdamW(params, lr=float(rate.group(1)) if rate else LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: s / WARMUP if s < WARMUP else 0.5 * (1 + math.cos(math.pi * (s - WARMUP) / max(1, args.steps - WARMUP))),
    )
    order = random.Random(args.seed)
    pack = "_pack" in name
    rows = list(train_items)
    share = re.search(r"_caps(\d+)", name)
    if share:
        rows = with_caption_share(rows, int(share.group(1)) / 100)
    if pack:  # one unit per image, its turns in a seeded order
        by_index = defaultdict(list)
        for item in rows:
            by_index[item["index"]].append(item)
        rows = [{"index": index, "rows": order.sample(turns, len(turns))} for index, turns in by_index.items()]
    order.shuffle(rows)
    step_times, losses = [], []
    for step in range(args.steps):
        start = (step * BATCH) % len(rows)
        items = rows[start : start + BATCH]
        batch = packed_batch(processor, items, features) if pack else batch_of(processor, items, features)
        began = clock("cpu")
        distill = "_distill" in name
        output = model(**batch, output_hidden_states=distill)
        loss = output.loss
        if distill:
            loss = loss + caption_teacher_loss(model, processor, items, batch, output, captions)
        if "_bow" in name:
            indices = [item["index"] for item in items]
            loss = loss + caption_bag_loss(model, batch["image_features"], bags[indices])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        step_times.append(clock("cpu") - began)
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            print(f"  {name} step {step + 1}/{args.steps}: loss {statistics.mean(losses[-25:]):.3f}, "
                  f"{statistics.median(step_times[-25:]):.2f} s/step", flush=True)
    model.eval()
    return {"model": model, "processor": processor, "lm_dtype": str(dtype), "step_s": statistics.median(step_times[5:] or step_times),
            "train_cpu_min": sum(step_times) / 60, "final_loss": statistics.mean(losses[-25:])}


def with_caption_share(items: List[Dict], share: float) -> List[Dict]:
    """`items` with every caption row repeated as often as makes captions about `share` of the rows."""
    captions = [item for item in items if item["type"] == "caption"]
    copies = caption_copies(len(captions), len(items) - len(captions), share)
    return [item for item in items if item["type"] != "caption"] + captions * copies


def with_caption_context(items: List[Dict], captions: Dict[int, str]) -> List[Dict]:
    """The question rows with their image's caption (`captions`: image index -> text) before the question, as
    `hf_vadapter.experts` puts an expert's text ("Context: <caption>" and the question); caption rows unchanged."""
    return [
        item if item["type"] == "caption" else {**item, "prompt": with_caption(item["prompt"], captions[item["index"]])}
        for item in items
    ]


@torch.no_grad()
def greedy_texts(model, processor, items, features, max_new_tokens: int) -> List[str]:
    """The model's greedy continuation of every item's prompt (with its image), in chunks of 50."""
    texts = []
    for start in range(0, len(items), 50):
        batch = batch_of(processor, items[start : start + 50], features, with_targets=False)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        texts += processor.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def own_captions(model, processor, items, features) -> Dict[int, str]:
    """The model's greedy caption (at most 40 tokens) of every image that has a caption row: image index -> text."""
    rows = [item for item in items if item["type"] == "caption"]
    return {item["index"]: text.strip() for item, text in zip(rows, greedy_texts(model, processor, rows, features, 40))}


@torch.no_grad()
def evaluate_arm(model, processor, items, features, describe: bool = False) -> Dict[str, float]:
    """Greedy answers (4 new tokens), first word against the target, per question type; captions skipped. With
    `describe`, each question first gets the model's own caption of its image as context (`caption_tokens`: their
    mean length, the extra decode per image)."""
    hits = defaultdict(list)
    extra = {}
    if describe:
        captions = own_captions(model, processor, items, features)
        items = with_caption_context(items, captions)
        extra["caption_tokens"] = statistics.mean(len(processor.tokenizer(t)["input_ids"]) for t in captions.values())
    questions = [item for item in items if item["type"] != "caption"]
    for item, answer in zip(questions, greedy_texts(model, processor, questions, features, 4)):
        words = answer.strip().lower().rstrip(".").split()
        hits[item["type"]].append(bool(words) and words[0] == item["target"].lower())
    return {**{kind: sum(v) / len(v) for kind, v in sorted(hits.items())}, **extra}


def results_table(results: List[Dict]) -> List[str]:
    """Markdown rows: accuracy per question type on both splits, and the step cost (median process CPU seconds)
    relative to the `base` arm of the same steps and seed in the results file."""
    base = {(r["steps"], r["seed"]): r["step_s"] for r in results if r["arm"] == "base"}
    lines = [
        "| arm | steps | seed | step cost vs base | train CPU min | final loss | test " + " / ".join(QUESTION_TYPES)
        + " | test_heldout " + " / ".join(QUESTION_TYPES) + " |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reference = base.get((r["steps"], r["seed"]))
        cost = f"{r['step_s'] / reference:.2f}" if reference else "n/a"
        accuracy = [" / ".join(f"{100 * r[split].get(kind, 0):.0f}" for kind in QUESTION_TYPES)
                    for split in ("test", HELDOUT_SPLIT)]
        lines.append(
            f"| {r['arm']} | {r['steps']} | {r['seed']} | {cost} | {r['train_cpu_min']:.1f} | {r['final_loss']:.2f} | "
            f"{accuracy[0]} | {accuracy[1]} |"
        )
    return lines


def seed_summary(results: List[Dict]) -> List[str]:
    """Markdown rows for every arm run on several seeds at the same steps: colour and shape accuracy as mean +- its
    standard error over the seeds (each seed draws its own scenes and initialisation)."""
    runs = defaultdict(list)
    for r in results:
        runs[(r["arm"], r["steps"])].append(r)
    lines = ["| arm | steps | seeds | test colour | test shape | test_heldout colour | test_heldout shape |",
             "|---|---|---|---|---|---|---|"]
    for (arm, steps), group in runs.items():
        if len({r["seed"] for r in group}) < 2:
            continue
        cells = []
        for split in ("test", HELDOUT_SPLIT):
            for kind in ("color", "shape"):
                mean, error = mean_and_standard_error([100 * r[split][kind] for r in group])
                cells.append(f"{mean:.1f} +- {error:.1f}")
        seeds = " ".join(str(r["seed"]) for r in group)
        lines.append(f"| {arm} | {steps} | {seeds} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arms", nargs="+", default=["base", "slots2", "words2", "words2_grid"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--heldout-images", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(OUT / "results.jsonl"))
    parser.add_argument("--table", action="store_true", help="print the results file as a table and stop")
    args = parser.parse_args(argv)
    if args.table:
        results = [json.loads(line) for line in open(args.results) if line.strip()]
        summary = seed_summary(results)
        table = "\n".join(results_table(results) + (["", *summary] if summary else []))
        print(table)
        return table
    torch.set_num_threads(args.threads)
    dtype = choose_language_model_dtype()
    dtype_name = str(dtype).replace("torch.", "")
    setting = (f"Machine: {machine()}. LM in {dtype_name} (chosen at start-up by measurement); {args.steps} steps of "
               f"batch {BATCH}, lr {LR}, seed {args.seed}; {args.train_images} training scenes, {args.test_images} "
               f"test and {args.heldout_images} held-out scenes; accuracy in %.")
    print(setting, flush=True)
    paths = backbone_paths()
    splits = {
        "train": build_synthetic_dataset("train", args.train_images, IMAGE_SIZE, args.seed),
        "test": build_synthetic_dataset("test", args.test_images, IMAGE_SIZE, args.seed),
        HELDOUT_SPLIT: build_synthetic_dataset(HELDOUT_SPLIT, args.heldout_images, IMAGE_SIZE, args.seed),
    }
    grouped = {split: image_rows(ds) for split, ds in splits.items()}
    features_of = {}  # feature selection -> features per split

    def features_for(config) -> Dict[str, torch.Tensor]:
        key = (tuple(config.feature_layers), config.feature_select, config.feature_norm)
        if key not in features_of:
            probe = VisionAdapterForCausalLM.from_vision_text_pretrained(*paths, config, image_size=IMAGE_SIZE).eval()
            processor = VisionAdapterProcessor.for_model(probe, use_chat_template=False)
            features_of[key] = cached_features(probe, processor, grouped, args.seed)
        return features_of[key]

    tokenizer = AutoTokenizer.from_pretrained(paths[1])
    items = {
        split: [{**row, "index": i} for i, image in enumerate(images) for row in image["rows"]]
        for split, images in grouped.items()
    }
    captions = [row["target"] for row in items["train"] if row["type"] == "caption"]
    results = []
    for name in args.arms:
        config = arm_config(name, tokenizer, captions)
        features = features_for(config)
        began = time.time()
        bags = None
        if getattr(config, "token_vocabulary", None):  # the caption's tokens as a multi-hot over the token vocabulary, per image
            position = {token: i for i, token in enumerate(config.token_vocabulary)}
            bags = torch.zeros(len(grouped["train"]), len(position))
            for item in items["train"]:
                if item["type"] == "caption":
                    for token in tokenizer(item["target"], add_special_tokens=False)["input_ids"]:
                        bags[item["index"], position[token]] = 1.0
        caption_of_image = {item["index"]: item["target"] for item in items["train"] if item["type"] == "caption"}
        describe = "_describe" in name  # train on reference captions as context, answer after the model's own
        train_items = with_caption_context(items["train"], caption_of_image) if describe else items["train"]
        run = train_arm(name, config, paths, features["train"], train_items, args, dtype, bags, caption_of_image)
        result = {"arm": name, "seed": args.seed, "steps": args.steps, "lm_dtype": run["lm_dtype"],
                  "num_image_tokens": run["model"].config.num_image_tokens,
                  **{k: run[k] for k in ("step_s", "train_cpu_min", "final_loss")}}
        for split in ("test", HELDOUT_SPLIT):
            result[split] = evaluate_arm(run["model"], run["processor"], items[split], features[split], describe)
        result["wall_min"] = (time.time() - began) / 60
        print(json.dumps(result), flush=True)
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as handle:
            handle.write(json.dumps(result) + "\n")
        results.append(result)
    table = "\n".join([setting, "", *results_table(results)])
    print(table)
    return table


if __name__ == "__main__":
    main()
