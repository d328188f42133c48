"""Generation-based evaluation: batched generation equals single rows, the metric wiring, the files written, and
the metrics the trainer reports during training."""

import json

import pytest
import torch

import hf_vadapter
from conftest import build_model
from hf_vadapter.data import build_synthetic_dataset
from hf_vadapter.evaluation import generate_predictions, score_predictions
from hf_vadapter.evaluation.runner import METRICS_NAME, PREDICTIONS_NAME, evaluate_model, load_for_evaluation
from hf_vadapter.training import run_training
from hf_vadapter.training.instructions import instructions_to_dataset
from test_training_helpers import arguments, bases  # noqa: F401


@pytest.fixture
def model_and_processor(bases):
    return build_model(*bases, hf_vadapter.MLPProjectorConfig(num_layers=1))


@pytest.fixture
def rows():
    return build_synthetic_dataset("test", 2, image_size=32)


def test_batched_generation_equals_one_row_at_a_time(model_and_processor, rows):
    model, processor = model_and_processor
    chosen = [rows[index] for index in (0, 3, 7, 11)]  # prompts of different lengths: left padding matters
    batched = generate_predictions(model, processor, chosen, batch_size=4, max_new_tokens=6, progress=False)
    single = [generate_predictions(model, processor, [row], batch_size=1, max_new_tokens=6, progress=False)[0] for row in chosen]
    assert batched == single and len(batched) == 4


def test_scores_use_the_shipped_metrics(rows):
    row_list = [rows[index] for index in range(len(rows))]
    text_row = instructions_to_dataset([{"instruction": "Say hi.", "input": "", "output": "hi"}])[0]
    perfect = [row["target"] for row in row_list]
    metrics = score_predictions(row_list + [text_row], perfect + ["anything"])
    assert metrics["num_captions"] == 2 and metrics["num_questions"] == 10  # the text-only row is not scored
    assert metrics["bleu"] == pytest.approx(100.0) and metrics["bleu_1"] == pytest.approx(100.0)
    assert metrics["cider"] > 1.0  # over the whole caption set
    assert metrics["vqa_accuracy"] == pytest.approx(1.0)
    for question_type in ("color", "shape", "count", "yes_no", "position"):
        assert metrics[f"vqa_accuracy_{question_type}"] == pytest.approx(1.0)

    wrong = ["purple" if row["task"] == "vqa" else "nothing at all" for row in row_list]
    metrics = score_predictions(row_list, wrong)
    assert metrics["vqa_accuracy"] == 0.0 and metrics["cider"] == pytest.approx(0.0) and metrics["bleu"] < 5
    # A single exact reference (as user VQA data may have) is scored as agreed by all annotators.
    single = dict(row_list[1], references=[row_list[1]["target"]])
    assert score_predictions([single], [row_list[1]["target"]])["vqa_accuracy"] == pytest.approx(1.0)


def test_evaluate_writes_predictions_and_metrics_for_adapter_only_checkpoints(bases, model_and_processor, rows, tmp_path):
    model, processor = model_and_processor
    model.save_adapter(tmp_path / "adapter", processor=processor)
    loaded, loaded_processor = load_for_evaluation(tmp_path / "adapter")
    for key, value in model.adapter_state_dict().items():
        assert torch.equal(loaded.adapter_state_dict()[key], value)
    metrics = evaluate_model(
        loaded, loaded_processor, rows, output_dir=tmp_path / "eval", batch_size=5, max_new_tokens=4, progress=False
    )
    lines = (tmp_path / "eval" / PREDICTIONS_NAME).read_text().splitlines()
    assert len(lines) == len(rows)
    record = json.loads(lines[1])
    assert set(record) >= {"example_id", "task", "question_type", "prompt", "prediction", "references"}
    assert json.loads((tmp_path / "eval" / METRICS_NAME).read_text()) == metrics
    assert {"cider", "bleu", "vqa_accuracy", "vqa_accuracy_color"} <= set(metrics)

    # The same adapter on other copies of its bases (explicit paths).
    again, _ = load_for_evaluation(tmp_path / "adapter", vision_model_name_or_path=bases[0], text_model_name_or_path=bases[1])
    assert again.config.num_image_tokens == model.config.num_image_tokens


def test_training_reports_generation_metrics_and_selects_on_them(bases, tmp_path):
    run = run_training(
        *arguments(
            bases,
            tmp_path / "run",
            max_steps=2,
            generation_eval=True,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=1,
            load_best_model_at_end=True,
            metric_for_best_model="vqa_accuracy",
        )
    )
    evaluations = [entry for entry in run.trainer.state.log_history if "eval_loss" in entry]
    assert len(evaluations) >= 2
    for entry in evaluations:
        assert {"eval_cider", "eval_bleu", "eval_vqa_accuracy", "eval_vqa_accuracy_count"} <= set(entry)
        assert 0.0 <= entry["eval_vqa_accuracy"] <= 1.0
    assert run.trainer.state.best_metric == max(entry["eval_vqa_accuracy"] for entry in evaluations[:2])


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    "kind, files",
    [
        ("coco", ["--data_dir", "coco/images", "--annotations_file", "coco/captions.json"]),
        ("vqav2", ["--data_dir", "coco/images", "--annotations_file", "vqav2/annotations.json",
                   "--questions_file", "vqav2/questions.json"]),
        ("imagefolder", ["--data_dir", "imagefolder"]),
    ],
)  # fmt: skip
def test_evaluate_command_reads_user_formats(bases, model_and_processor, kind, files, tmp_path):
    from hf_vadapter import cli

    model, processor = model_and_processor
    model.save_adapter(tmp_path / "adapter", processor=processor)
    paths = [str(FIXTURES / value) if not value.startswith("--") else value for value in files]
    argv = ["evaluate", "--checkpoint", str(tmp_path / "adapter"), "--output_dir", str(tmp_path / "eval"),
            "--dataset", kind, *paths, "--max_new_tokens", "3"]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "eval" / METRICS_NAME).read_text())
    lines = (tmp_path / "eval" / PREDICTIONS_NAME).read_text().splitlines()
    assert ("vqa_accuracy" in metrics) == (kind == "vqav2") and ("cider" in metrics) == (kind != "vqav2")
    assert len(lines) == (3 if kind != "imagefolder" else 2)
