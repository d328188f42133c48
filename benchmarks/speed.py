"""Real-backbone costs of the adapters against their floors, in one run (DINOv2-small + SmolLM2-135M-Instruct).

    python benchmarks/speed.py                          # everything, about 10 minutes on 2 CPU cores
    python benchmarks/speed.py --only step logits --repeats 3

Benchmarks (each prints a table; ratios are between timings taken in this run, medians of --repeats):
  step     train step (forward + backward from pixels) / floor, per adapter, at 224 px and 126 px. Floor = the frozen
           tower's no-grad forward + the frozen LM's forward and backward w.r.t. inputs_embeds only, on the same
           token count and the same supervised-position loss.
  logits   a step with labels (LM head at supervised positions only) / full [B, S, V] logits + cross-entropy.
  cache    a step from cached tower features (image_features=) / a step from pixel_values=.
  tower    the tower features an adapter reads (the tower stops after the deepest layer read) / a whole-tower
           forward with all hidden states.
  generate greedy tokens/s (32 new tokens, min_new_tokens=32) / the bare LM on a text prompt of the same length.
           Also the tower's forward alone, and the ratio it bounds: LM / (LM + tower).
  memory   peak RSS (VmHWM) of a training step / of a no-grad forward, each in a fresh subprocess.
  params   trainable parameters per adapter on this pair.
Step timings are process CPU time (see epalm_backward.clock); generation is wall time.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import adapter_configs, build, machine, make_batch, median_times, tee_stdout  # noqa: E402

SIZES = (224, 126)


def train_step(model, batch, **overrides):
    model.zero_grad(set_to_none=True)
    inputs = {**batch, **overrides}
    model(**inputs).loss.backward()


def floor_step(model, batch):
    """Frozen tower forward (no grad) + frozen LM forward/backward w.r.t. its inputs, same tokens and loss."""
    model.get_vision_features(batch["pixel_values"])
    lm = model.language_model
    embeds = lm.get_input_embeddings()(batch["input_ids"].clamp(max=lm.config.vocab_size - 1)).detach()
    embeds.requires_grad_(True)
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    logits = lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][labels[:, 1:] != -100])
    loss.backward()


def bench_step(args):
    print(f"\n## step: train step / floor (batch {args.batch}, median of {args.repeats})")
    print(f"{'adapter':16} {'px':>4} {'vis.tok':>7} {'seq':>4} {'step s':>7} {'floor s':>7} {'step/floor':>10}")
    rows = []
    for size in SIZES:
        for name in adapter_configs(size):
            model = build(name, size)
            batch = make_batch(model, args.batch)
            step, floor = median_times([lambda: train_step(model, batch), lambda: floor_step(model, batch)], args.repeats)
            rows.append(dict(adapter=name, px=size, tokens=model.config.num_image_tokens,
                             seq=batch["input_ids"].shape[1], step=step, floor=floor))
            r = rows[-1]
            print(f"{name:16} {size:>4} {r['tokens']:>7} {r['seq']:>4} {step:>7.3f} {floor:>7.3f} {step / floor:>10.3f}",
                  flush=True)
        prefix = next(r for r in rows if r["px"] == size and r["adapter"] == "mlp_projector")
        epalm = next(r for r in rows if r["px"] == size and r["adapter"] == "epalm")
        print(f"eP-ALM step / MLP-prefix floor at {size} px: {epalm['step'] / prefix['floor']:.3f}")
    return rows


def full_logits_step(model, batch):
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits  # [B, S, V]
    labels = batch["labels"]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    loss.backward()


def bench_logits(args):
    print(f"\n## logits: supervised-positions head / full logits (batch {args.batch}, 126 px, MLP projector)")
    model = build("mlp_projector", 126)
    batch = make_batch(model, args.batch)
    full, kept = median_times([lambda: full_logits_step(model, batch), lambda: train_step(model, batch)], args.repeats)
    print(f"{'full logits s':>13} {'supervised s':>12} {'supervised/full':>15}")
    print(f"{full:>13.3f} {kept:>12.3f} {kept / full:>15.3f}")
    return dict(full=full, supervised=kept)


def bench_cache(args):
    print(f"\n## cache: step from image_features= / from pixel_values= (batch {args.batch})")
    print(f"{'adapter':16} {'px':>4} {'pixels s':>8} {'cache s':>8} {'cache/pixels':>12}")
    rows = []
    for size in SIZES:
        model = build("mlp_projector", size)
        batch = make_batch(model, args.batch)
        features = model.get_vision_features(batch["pixel_values"])
        pixels, cached = median_times(
            [lambda: train_step(model, batch), lambda: train_step(model, batch, pixel_values=None, image_features=features)],
            args.repeats,
        )
        rows.append(dict(px=size, pixels=pixels, cache=cached))
        print(f"{'mlp_projector':16} {size:>4} {pixels:>8.3f} {cached:>8.3f} {cached / pixels:>12.3f}", flush=True)
    return rows


def bench_tower(args):
    print(f"\n## tower: the features an adapter reads / a whole-tower forward (no grad, batch {args.batch}, 126 px)")
    print(f"{'adapter':16} {'layers read':>18} {'whole s':>8} {'read s':>8} {'read/whole':>10}")
    rows = []
    for name in adapter_configs(126):
        model = build(name, 126).eval()
        pixels = make_batch(model, args.batch)["pixel_values"]
        with torch.no_grad():
            whole, read = median_times(
                [
                    lambda: model.vision_tower(pixel_values=pixels, output_hidden_states=True),
                    lambda: model.get_vision_features(pixels),
                ],
                args.repeats,
            )
        layers = ",".join(map(str, model.config.adapter.feature_layers))
        rows.append(dict(adapter=name, whole=whole, read=read))
        print(f"{name:16} {layers:>18} {whole:>8.3f} {read:>8.3f} {read / whole:>10.3f}", flush=True)
    return rows


def bench_generate(args):
    print("\n## generate: greedy tokens/s, 32 new tokens, 126 px, against the bare LM on a same-length text prompt")
    print("(tower s: the tower's forward on the batch's images, once per generate call; bound: the ratio if that were")
    print(" the model's only cost beyond the bare LM, LM s / (LM s + tower s))")
    print(f"{'adapter':16} {'batch':>5} {'prompt':>6} {'model tok/s':>11} {'LM tok/s':>9} {'ratio':>6} {'tower s':>7} "
          f"{'bound':>6}")
    rows = []
    gen = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False)
    for name in adapter_configs(126):
        model = build(name, 126).eval()
        lm = model.language_model
        for batch_size in (1, 8):
            batch = make_batch(model, batch_size, with_answer=False)
            batch.pop("labels")
            text_ids = batch["input_ids"].clamp(max=lm.config.vocab_size - 1)
            text_ids = torch.where(text_ids == batch["input_ids"], text_ids, torch.full_like(text_ids, 1000))
            with torch.no_grad():
                t_model, t_lm, t_tower = median_times(
                    [
                        lambda: model.generate(**batch, **gen),
                        lambda: lm.generate(input_ids=text_ids, attention_mask=batch["attention_mask"], **gen),
                        lambda: model.get_vision_features(batch["pixel_values"]),
                    ],
                    args.repeats,
                    timer=time.perf_counter,
                )
            new = 32 * batch_size
            rows.append(dict(adapter=name, batch=batch_size, model=new / t_model, lm=new / t_lm, tower=t_tower))
            print(f"{name:16} {batch_size:>5} {text_ids.shape[1]:>6} {new / t_model:>11.1f} {new / t_lm:>9.1f} "
                  f"{t_lm / t_model:>6.3f} {t_tower:>7.3f} {t_lm / (t_lm + t_tower):>6.3f}", flush=True)
    return rows


def _memory_child(adapter: str, mode: str, size: int, batch_size: int) -> None:
    torch.set_num_threads(2)
    model = build(adapter, size)
    batch = make_batch(model, batch_size)
    if mode == "train":
        train_step(model, batch)
    else:
        with torch.no_grad():
            model(**batch)
    status = open("/proc/self/status").read()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
    print(json.dumps(dict(hwm_mb=int(hwm.split()[1]) / 1024)))


def bench_memory(args):
    print(f"\n## memory: peak RSS (VmHWM, fresh process each) of a train step / a no-grad forward, batch {args.batch}")
    print(f"{'adapter':16} {'px':>4} {'infer MB':>9} {'train MB':>9} {'train/infer':>11}")
    rows = []
    for size in SIZES:
        for name in adapter_configs(size):
            peaks = {}
            for mode in ("infer", "train"):
                out = subprocess.run(
                    [sys.executable, __file__, "--_memory", name, mode, str(size), str(args.batch)],
                    capture_output=True, text=True, check=True).stdout
                peaks[mode] = json.loads(out.strip().splitlines()[-1])["hwm_mb"]
            rows.append(dict(adapter=name, px=size, **peaks))
            print(f"{name:16} {size:>4} {peaks['infer']:>9.0f} {peaks['train']:>9.0f} "
                  f"{peaks['train'] / peaks['infer']:>11.3f}", flush=True)
    return rows


def bench_params(args):
    print("\n## params: trainable parameters on DINOv2-small + SmolLM2-135M-Instruct (126 px)")
    print(f"{'adapter':16} {'trainable':>11} {'total':>12} {'trainable %':>11}")
    for name in adapter_configs(126):
        trainable, total = build(name, 126).get_nb_trainable_parameters()
        print(f"{name:16} {trainable:>11,} {total:>12,} {100 * trainable / total:>11.3f}")


BENCHES = dict(step=bench_step, logits=bench_logits, cache=bench_cache, tower=bench_tower, generate=bench_generate,
               memory=bench_memory, params=bench_params)


def main(argv: Optional[List[str]] = None) -> str:
    """Run the chosen benchmarks, print their tables, and return what was printed as a markdown code block."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--_memory", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._memory:
        adapter, mode, size, batch = args._memory
        _memory_child(adapter, mode, int(size), int(batch))
        return ""
    torch.set_num_threads(args.threads)
    with tee_stdout() as printed:
        print(f"machine: {machine()}; command: python benchmarks/speed.py {' '.join(argv)}")
        for name in args.only:
            BENCHES[name](args)
    return f"```\n{printed.getvalue().strip()}\n```"


if __name__ == "__main__":
    main()
