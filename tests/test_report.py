"""The quickstart's report.md: why the run trained the steps it did, and example tables that stay tables."""

from dataclasses import asdict, replace

import pytest

from hf_vadapter.quickstart import PRESETS
from hf_vadapter.report import write_report


def summary_for(settings):
    return {
        "preset": "default",
        "settings": settings,
        "trainable_parameters": 10,
        "total_parameters": 1000,
        "steps": 602,
        "language_model_dtype": "bfloat16",
        "metrics": {"test": {"vqa_accuracy_color": 0.5}, "test_heldout": {"vqa_accuracy_color": 0.25}},
        "timings": {"train_s": 510.0},
    }


@pytest.mark.parametrize(
    "preset, reason",
    [
        (PRESETS["default"], "the steps that fitted in the 10-minute training budget on this machine"),
        (replace(PRESETS["default"], train_minutes=None), "a fixed step count (--no-clock, at most 1000)"),
    ],
)
def test_the_report_says_why_the_run_trained_its_steps(tmp_path, preset, reason):
    report = write_report(tmp_path, summary_for(asdict(preset)), [], [{"loss": 4.0}, {"loss": 0.5}])
    text = report.read_text()
    assert f"602 steps of batch 16: {reason}" in text
    assert "| VQA accuracy, color | 50.0% | 25.0% |" in text


def test_a_multi_line_answer_stays_in_its_table_row(tmp_path):
    example = {"source": "photo", "image": "a.png", "prompt": "Describe | it.", "answer": "pick\n\npick a different",
               "reference": "a cat"}
    text = write_report(tmp_path, summary_for(asdict(PRESETS["default"])), [example], []).read_text()
    assert "| ![](examples/a.png) photo | Describe \\| it. | pick pick a different | a cat |" in text.splitlines()
