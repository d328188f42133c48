"""How much backward work eP-ALM does, against its own input-prompt variant and a prefix adapter, in one run.

    python benchmarks/epalm_backward.py                      # random Llama-shaped LM, CPU, about a minute
    python benchmarks/epalm_backward.py --layers 32 --hidden 1024 --device cuda

Random bases built from configs (nothing is downloaded); the frozen tower runs once and its features are reused,
so the timings are the LM + adapter step. For each adapter it prints: the autograd nodes a backward pass runs, how
many decoder layers are in the autograd graph, and the median forward+backward and backward-only times, with
ratios to the eP-ALM default measured in the same run. The floor is a no-grad forward of the same batch. On CPU the
seconds are this process's CPU time (the work done, robust to other load on a shared machine); on a GPU, wall time.
"""

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, ViTConfig

from hf_vadapter import EPALMConfig, MLPProjectorConfig, VisionAdapterConfig, VisionAdapterForCausalLM
from hf_vadapter.diagnostics import autograd_graph_size
from hf_vadapter.modeling.lm_anatomy import get_lm_anatomy


def build(adapter_config, args) -> VisionAdapterForCausalLM:
    vision = ViTConfig(
        hidden_size=args.tower_hidden,
        num_hidden_layers=12,
        num_attention_heads=args.tower_hidden // 64,
        intermediate_size=4 * args.tower_hidden,
        image_size=224,
        patch_size=16,
    )
    text = LlamaConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        intermediate_size=int(2.6875 * args.hidden),
        vocab_size=32000,
        max_position_embeddings=1024,
    )
    config = VisionAdapterConfig(vision, text, adapter_config, image_size=224, image_token_id=text.vocab_size)
    torch.manual_seed(0)
    return VisionAdapterForCausalLM(config).to(args.device).train()


def batch_for(model: VisionAdapterForCausalLM, args) -> dict:
    """`num_image_tokens` placeholders, then text; the last 8 tokens are supervised."""
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, 32000, (args.batch, args.text), generator=generator)
    placeholders = torch.full((args.batch, model.config.num_image_tokens), model.config.image_token_id)
    input_ids = torch.cat([text[:, :1], placeholders, text[:, 1:]], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -8:] = input_ids[:, -8:]
    pixel_values = torch.randn(args.batch, 3, 224, 224, generator=generator)
    with torch.no_grad():
        features = model.get_vision_features(pixel_values.to(args.device))
    return {
        "input_ids": input_ids.to(args.device),
        "attention_mask": torch.ones_like(input_ids).to(args.device),
        "labels": labels.to(args.device),
        "image_features": features,
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> float:
    """CPU time of this process on CPU (the work done, whatever else the machine runs); wall time on a GPU."""
    sync(device)
    return time.perf_counter() if device.startswith("cuda") else time.process_time()


class Variant:
    """One model, its batch, and what one measured step costs."""

    def __init__(self, name: str, adapter_config, args):
        self.name, self.device = name, args.device
        self.model = build(adapter_config, args)
        self.batch = batch_for(self.model, args)
        self.steps, self.backwards, self.floors = [], [], []
        layers = get_lm_anatomy(self.model.language_model).decoder_layers
        in_graph = []
        handles = [layer.register_forward_hook(lambda m, a, out: in_graph.append(out.requires_grad)) for layer in layers]
        loss = self.model(**self.batch).loss
        for handle in handles:
            handle.remove()
        self.nodes, self.layers_in_graph = autograd_graph_size(loss), sum(in_graph)
        loss.backward()  # warm-up

    def measure_once(self) -> None:
        self.model.zero_grad(set_to_none=True)
        start = clock(self.device)
        loss = self.model(**self.batch).loss
        middle = clock(self.device)
        loss.backward()
        end = clock(self.device)
        self.steps.append(end - start)
        self.backwards.append(end - middle)
        with torch.no_grad():
            start = clock(self.device)
            self.model(**self.batch)
            self.floors.append(clock(self.device) - start)

    def result(self) -> dict:
        return dict(
            name=self.name,
            tokens=self.model.config.num_image_tokens,
            trainable=self.model.get_nb_trainable_parameters()[0],
            nodes=self.nodes,
            layers_in_graph=self.layers_in_graph,
            step=statistics.median(self.steps),
            backward=statistics.median(self.backwards),
            floor=statistics.median(self.floors),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--tower-hidden", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text", type=int, default=48, help="text tokens per sequence")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = [
        ("eP-ALM, prompt at layer L (default)", EPALMConfig()),
        ("eP-ALM, prompt at the input (paper)", EPALMConfig(prompt_placement="input")),
        ("prefix: MLP projector, 49 tokens", MLPProjectorConfig(pool_size=2)),
    ]
    models = [Variant(name, config, args) for name, config in variants]
    for _ in range(args.repeats):  # round robin: a busy machine slows every variant alike
        for variant in models:
            variant.measure_once()
    results = [variant.result() for variant in models]
    base = results[0]
    injection_layer = EPALMConfig().resolved_injection_layer(args.layers)
    print(
        f"LM: random Llama, {args.layers} layers, hidden {args.hidden}; eP-ALM L = {injection_layer}; batch "
        f"{args.batch} x ({args.text} text tokens + visual tokens); device {args.device}, "
        f"{torch.get_num_threads()} threads; median of {args.repeats}; seconds are "
        f"{'wall' if args.device.startswith('cuda') else 'process CPU'} time"
    )
    header = f"{'adapter':38} {'vis.tok':>7} {'trainable':>10} {'bwd nodes':>9} {'layers':>6} {'fwd+bwd s':>9} {'bwd s':>7} {'floor s':>7} {'step/default':>12} {'bwd/default':>11}"
    print(header)
    for r in results:
        print(
            f"{r['name']:38} {r['tokens']:>7} {r['trainable']:>10,} {r['nodes']:>9} {r['layers_in_graph']:>3}/{args.layers:<2} "
            f"{r['step']:>9.3f} {r['backward']:>7.3f} {r['floor']:>7.3f} {r['step'] / base['step']:>12.2f} "
            f"{r['backward'] / base['backward']:>11.2f}"
        )


if __name__ == "__main__":
    main()
