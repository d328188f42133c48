"""Where binding colour to shape fails on the quickstart default: in the features, or in the frozen LM?

    python benchmarks/binding.py            # about 15 minutes on 2 CPU cores
    python benchmarks/binding.py --quick    # a smoke pass

Two measurements with the packaged DINOv2-small and SmolLM2-135M-Instruct, the LM frozen in both:

1. **Cell probe.** The quickstart's MLP projector reads one visual token per cell of the scenes' 3x3 layout (tower
   layers 3, 6 and 9, each layer-normed, patches averaged per cell). A linear classifier on exactly those pooled
   vectors, fitted on the cells of training scenes that hold a shape, names the colour and the shape of the cells of
   test and held-out scenes. Near 100% means each visual token carries its object's colour and shape.
2. **Text oracle.** The frozen LM answers the questions from the scene's exact caption given in words ("a small red
   star at the top and ..."), after prompt tuning a soft prompt as long as the default's visual prefix, with the
   quickstart's batch, learning rate and step count. No visual token can tell the LM more than the caption, so this
   is how well the frozen LM binds attributes that reach it as words, at the same training cost.

Between the two lies the visual path of the default: features that hold the answer, an LM that can bind words, and
answers near half (README.md) when the same attributes reach the LM as one fused visual token per object.
"""

import argparse
import os
import random
import sys
from collections import defaultdict
from typing import Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import adapter_configs, backbone_paths, machine, tee_stdout  # noqa: E402

from hf_vadapter import VisionAdapterForCausalLM, VisionAdapterProcessor  # noqa: E402
from hf_vadapter.data.synthetic import (  # noqa: E402
    COLORS,
    HELDOUT_SPLIT,
    SHAPES,
    build_synthetic_dataset,
    render_scene,
    sample_scene,
    scene_rng,
)

IMAGE_SIZE = 126  # the quickstart's: 9x9 patches, pooled 3x3 into one token per cell
GRID = 3
TEXT_PROMPT = "Image: {caption}\n{question}\nAnswer:"
# The text oracle's prompt tuning: as many virtual tokens as the default has visual tokens, the quickstart's batch
# and learning rate.
ORACLE_TOKENS, ORACLE_BATCH, ORACLE_LR, ORACLE_WARMUP = 9, 16, 2e-3, 30
ORACLE_INIT_TEXT = "Answer the question about the scene in one word."


def cell_vectors(model: VisionAdapterForCausalLM, processor, split: str, count: int, seed: int):
    """The projector's pooled input for every cell holding a shape: ([N, L*Dv], colour ids [N], shape ids [N])."""
    vectors, colors, shapes = [], [], []
    adapter = model.adapter
    heldout = split == HELDOUT_SPLIT
    for start in range(0, count, 64):
        scenes = [sample_scene(scene_rng(split, i, seed), heldout) for i in range(start, min(start + 64, count))]
        images = [render_scene(scene, IMAGE_SIZE) for scene in scenes]
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        pooled = adapter.pooled_features(model.get_vision_features(pixels))  # [B, 9, L*Dv]
        for row, scene in enumerate(scenes):
            for obj in scene.objects:
                cell = int(obj.center[1] * GRID) * GRID + int(obj.center[0] * GRID)
                vectors.append(pooled[row, cell])
                colors.append(COLORS.index(obj.color))
                shapes.append(SHAPES.index(obj.shape))
    return torch.stack(vectors), torch.tensor(colors), torch.tensor(shapes)


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 300) -> nn.Linear:
    """Multinomial logistic regression (L-BFGS, light L2) on standardised inputs."""
    torch.manual_seed(0)
    probe = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(probe(x), y) + 1e-4 * probe.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def probe_table(model, processor, args) -> str:
    with torch.no_grad():
        train = cell_vectors(model, processor, "train", args.probe_train_images, args.seed)
        tests = {
            split: cell_vectors(model, processor, split, args.probe_test_images, args.seed)
            for split in ("test", HELDOUT_SPLIT)
        }
    mean, std = train[0].mean(0), train[0].std(0) + 1e-6
    results: Dict[str, Dict[str, float]] = defaultdict(dict)
    for name, index, classes in (("colour", 1, len(COLORS)), ("shape", 2, len(SHAPES))):
        probe = fit_probe((train[0] - mean) / std, train[index], classes)
        for split, data in tests.items():
            with torch.no_grad():
                predicted = probe((data[0] - mean) / std).argmax(-1)
            results[split][name] = float((predicted == data[index]).float().mean())
    lines = [
        f"Cell probe: {len(train[0])} training cells from {args.probe_train_images} scenes; "
        f"{args.probe_test_images} scenes per test split.",
        "",
        "| split | cells | colour | shape |",
        "|---|---|---|---|",
    ]
    for split, data in tests.items():
        scores = results[split]
        lines.append(f"| {split} | {len(data[0])} | {100 * scores['colour']:.1f}% | {100 * scores['shape']:.1f}% |")
    return "\n".join(lines)


def caption_questions(split: str, images: int, seed: int) -> List[Dict]:
    """The split's VQA rows, each with its scene's exact caption as `caption`."""
    rows = build_synthetic_dataset(split, images, image_size=16, seed=seed).remove_columns("image")
    captions = {row["image_id"]: row["target"] for row in rows if row["question_type"] == "caption"}
    return [{**row, "caption": captions[row["image_id"]]} for row in rows if row["question_type"] != "caption"]


def encode_text(tokenizer, rows: List[Dict], with_answers: bool) -> Dict[str, torch.Tensor]:
    """Left-padded `TEXT_PROMPT`s (+ " answer" and EOS, the only supervised tokens, when `with_answers`)."""
    sequences, labels = [], []
    for row in rows:
        prompt = tokenizer(TEXT_PROMPT.format(caption=row["caption"], question=row["prompt"]))["input_ids"]
        answer = tokenizer(" " + row["target"])["input_ids"] + [tokenizer.eos_token_id] if with_answers else []
        sequences.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, sequences))
    pad = tokenizer.eos_token_id
    return {
        "input_ids": torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences]),
        "attention_mask": torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in sequences]),
        **({"labels": torch.tensor([[-100] * (width - len(ids)) + ids for ids in labels])} if with_answers else {}),
    }


def text_oracle(text_path: str, args) -> str:
    """The frozen LM (bf16) answering from the caption in words, after PEFT prompt tuning on the training questions."""
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_constant_schedule_with_warmup

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(text_path)
    lm = AutoModelForCausalLM.from_pretrained(text_path, dtype=torch.bfloat16)
    # Initialised from an instruction's word embeddings, so the soft prompt starts at the scale of the LM's embeddings.
    config = peft.PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=ORACLE_TOKENS,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text=ORACLE_INIT_TEXT,
        tokenizer_name_or_path=text_path,
    )
    model = peft.get_peft_model(lm, config)
    train = caption_questions("train", args.oracle_train_images, args.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=ORACLE_LR, weight_decay=0.0)
    schedule = get_constant_schedule_with_warmup(optimizer, ORACLE_WARMUP)
    order = random.Random(args.seed)
    model.train()
    for step in range(1, args.oracle_steps + 1):
        loss = model(**encode_text(tokenizer, order.sample(train, ORACLE_BATCH), with_answers=True)).loss
        loss.backward()
        optimizer.step(), schedule.step(), optimizer.zero_grad()
        if step % 50 == 0 or step == args.oracle_steps:
            print(f"  prompt tuning step {step}/{args.oracle_steps}: loss {loss.item():.3f}", flush=True)
    model.eval()
    results: Dict[str, Dict[str, float]] = {}
    for split in ("test", HELDOUT_SPLIT):
        rows = caption_questions(split, args.oracle_test_images, args.seed)
        correct: Dict[str, List[bool]] = defaultdict(list)
        for start in range(0, len(rows), 32):
            batch = rows[start : start + 32]
            encoded = encode_text(tokenizer, batch, with_answers=False)
            with torch.no_grad():
                output = model.generate(
                    **encoded, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id
                )
            answers = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            for row, answer in zip(batch, answers):
                words = answer.strip().lower().rstrip(".").split()
                correct[row["question_type"]].append(bool(words) and words[0] == row["target"].lower())
        results[split] = {kind: sum(hits) / len(hits) for kind, hits in correct.items()}
    kinds = sorted(results["test"])
    lines = [
        f"Text oracle: the frozen SmolLM2-135M (bf16) with a {ORACLE_TOKENS}-token soft prompt (PEFT prompt tuning, "
        f"initialised from the embeddings of {ORACLE_INIT_TEXT!r}), "
        f"{args.oracle_steps} steps of batch {ORACLE_BATCH} at lr {ORACLE_LR} on the questions of "
        f"{args.oracle_train_images} training scenes, each prompt `{TEXT_PROMPT!r}` holding the scene's caption; "
        f"greedy answers, first word against the target, {args.oracle_test_images} scenes per split.",
        "",
        "| split | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for split, values in results.items():
        lines.append(f"| {split} | " + " | ".join(f"{100 * values[k]:.0f}%" for k in kinds) + " |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few scenes: a smoke pass")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = (60, 30, 40, 4, 5) if args.quick else (1000, 200, 2000, 60, 400)
    args.probe_train_images, args.probe_test_images, args.oracle_train_images, args.oracle_test_images = sizes[:4]
    args.oracle_steps = sizes[4]
    torch.set_num_threads(os.cpu_count() or 1)
    with tee_stdout() as out:
        print(f"Machine: {machine()}\n")
        vision, text = backbone_paths()
        model = VisionAdapterForCausalLM.from_vision_text_pretrained(
            vision, text, adapter_configs(IMAGE_SIZE)["mlp_projector"], image_size=IMAGE_SIZE
        ).eval()
        processor = VisionAdapterProcessor.for_model(model)
        print(probe_table(model, processor, args) + "\n", flush=True)
        del model
        print(text_oracle(text, args), flush=True)
    return out.getvalue()


if __name__ == "__main__":
    main()
