"""eP-ALM's soft prompt at layer L (our default) against the paper's input placement, on a toy colour task.

    python benchmarks/epalm_prompt_placement.py

Tiny random bases built from configs (a 6-layer ViT, an 8-layer Llama with a large init so that its logits can be
steered): each solid-colour image must be answered with its colour token. Every config trains on the same seeded bases
for the same steps; the script prints the loss at the start and the end, how many of the 4 colours the first answer
token gets right, and the CPU time of a backward pass, averaged over seeds.
"""

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, ViTConfig

from hf_vadapter import EPALMConfig, VisionAdapterConfig, VisionAdapterForCausalLM

COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9], [0.9, 0.9, 0.1]])
COLOUR_TOKENS = torch.tensor([40, 41, 42, 43])
QUESTION = list(range(10, 18))
VOCAB = 128


def build(adapter_config: EPALMConfig, seed: int) -> VisionAdapterForCausalLM:
    vision = ViTConfig(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8)
    text = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=8,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=VOCAB,
        initializer_range=0.3,
    )
    config = VisionAdapterConfig(vision, text, adapter_config, image_size=32, image_token_id=VOCAB)
    torch.manual_seed(seed)  # each seed draws new bases and a new adapter; every config sees the same ones
    return VisionAdapterForCausalLM(config)


def batch_for(model: VisionAdapterForCausalLM) -> dict:
    """[bos, placeholders, question, colour, '.', eos]; the last three tokens are supervised."""
    n = len(COLOURS)
    placeholders = [model.config.image_token_id] * model.config.num_image_tokens
    rows = [[1, *placeholders, *QUESTION, int(token), 20, 2] for token in COLOUR_TOKENS]
    input_ids = torch.tensor(rows)
    labels = torch.full_like(input_ids, -100)
    labels[:, -3:] = input_ids[:, -3:]
    pixel_values = ((COLOURS[:, :, None, None].expand(n, 3, 32, 32)) - 0.5) / 0.5
    with torch.no_grad():
        features = model.get_vision_features(pixel_values)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels, image_features=features)


def run(adapter_config: EPALMConfig, seed: int, steps: int) -> tuple:
    model = build(adapter_config, seed)
    batch = batch_for(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses, backward_times = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**batch).loss
        start = time.process_time()
        loss.backward()
        backward_times.append(time.process_time() - start)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    prompt = {k: v[:, :-3] if k in ("input_ids", "attention_mask") else v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        predicted = model(**prompt).logits[:, -1].argmax(-1)
    return losses[0], losses[-1], int((predicted == COLOUR_TOKENS).sum()), statistics.median(backward_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    configs = [
        ("prompt at layer L (default), L=5", EPALMConfig()),
        ("prompt at the input (paper), L=5", EPALMConfig(prompt_placement="input")),
        ("prompt at layer L, L=1", EPALMConfig(injection_layer=1)),
        ("prompt at the input, L=1", EPALMConfig(injection_layer=1, prompt_placement="input")),
        ("no prompt, L=5", EPALMConfig(num_prompt_tokens=0)),
    ]
    print(f"8-layer random Llama, {args.steps} steps, mean over {args.seeds} seeds")
    print(f"{'eP-ALM config':36} {'loss start':>10} {'loss end':>9} {'colours /4':>10} {'bwd CPU ms':>10}")
    for name, config in configs:
        runs = [run(config, seed, args.steps) for seed in range(args.seeds)]
        start, end, right, backward = (statistics.mean(values) for values in zip(*runs))
        print(f"{name:36} {start:>10.2f} {end:>9.2f} {right:>10.2f} {1000 * backward:>10.2f}")


if __name__ == "__main__":
    main()
