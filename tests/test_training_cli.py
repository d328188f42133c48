"""`hf-vadapter train` / `evaluate`: argument parsing from files and flags, `--help`, and a tiny end-to-end run."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from hf_vadapter import cli
from hf_vadapter.modeling.errors import AdapterConfigError
from hf_vadapter.training import parse_arguments
from test_training_helpers import adapter_file, bases, run_values  # noqa: F401


def test_config_file_then_flags(tmp_path):
    adapter_yaml = tmp_path / "adapter.yaml"
    adapter_yaml.write_text("num_layers: 1\nfeature_layers: [-2]\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "vision_model_name_or_path": "tower",
                "text_model_name_or_path": "lm",
                "adapter_config": str(adapter_yaml),
                "output_dir": str(tmp_path / "out"),
                "learning_rate": 1e-3,
                "max_steps": 7,
                "use_feature_cache": True,
            }
        )
    )
    model_args, data_args, training_args = parse_arguments(
        [str(config), "--learning_rate", "0.01", "--no_csv_log", "--dataset", "photos"]
    )
    assert model_args.build_adapter_config().feature_layers == [-2]
    assert training_args.learning_rate == 0.01 and training_args.max_steps == 7  # the flag wins, the file fills in
    assert training_args.use_feature_cache and not training_args.csv_log and data_args.dataset == "photos"
    assert training_args.remove_unused_columns is False

    json_config = tmp_path / "run.json"
    json_config.write_text(json.dumps({"text_model_name_or_path": "lm", "adapter_config": '{"num_layers": 1}'}))
    model_args, _, _ = parse_arguments([str(json_config), "--output_dir", str(tmp_path)])
    assert model_args.build_adapter_config().num_layers == 1

    model_args, _, training_args = parse_arguments(["--adapter_type", "perceiver_resampler", "--output_dir", "x"])
    assert model_args.build_adapter_config().adapter_type == "perceiver_resampler" and training_args.output_dir == "x"
    with pytest.raises(AdapterConfigError, match="Unknown adapter_type"):
        parse_arguments(["--adapter_type", "nope"])


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hf-vadapter" in text
    if argv[0] == "train":
        assert "--use_feature_cache" in text and "--learning_rate" in text and "--adapter_config" in text
    if argv[0] == "evaluate":
        assert "--checkpoint" in text and "--dataset" in text


@pytest.mark.parametrize(
    "flags, overrides",
    [
        ([], {}),
        (["--image-placement", "start"], {"image_placement": "start"}),
        (["--max-steps", "602", "--no-clock"], {"max_steps": 602, "train_minutes": None}),
        (["--max_steps", "10"], {"max_steps": 10}),
        (["--describe-then-answer", "--max-steps", "600", "--no-clock"],
         {"describe_then_answer": True, "max_steps": 600, "train_minutes": None}),
        (["--no-describe-then-answer"], {"describe_then_answer": False, "caption_share": None}),
        (["--caption-share", "0.3"], {"caption_share": 0.3}),
    ],
)
def test_quickstart_flags_reach_run_quickstart(monkeypatch, flags, overrides):
    import hf_vadapter.quickstart

    calls = []
    monkeypatch.setattr(hf_vadapter.quickstart, "run_quickstart", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert cli.main(["quickstart", "--quick", "--output-dir", "out", *flags]) == 0
    assert calls == [(("out",), {"quick": True, "seed": 0, **overrides})]
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--image-placement", "middle"])
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--max-steps", "0"])
    with pytest.raises(SystemExit):
        cli.main(["quickstart", "--caption-share", "1"])


def test_a_subcommand_is_one_function():
    @cli.command("hello", help="Say hello.")
    def hello(parser):
        parser.add_argument("--name", default="world")
        return lambda args: print(f"hello {args.name}") or 0

    try:
        assert cli.main(["hello", "--name", "adapters"]) == 0
    finally:
        del cli.COMMANDS["hello"]


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "hf_vadapter.cli", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "train" in result.stdout and "evaluate" in result.stdout


def test_train_then_evaluate_end_to_end(bases, tmp_path):
    values = run_values(bases, tmp_path / "run", max_steps=3, save_strategy="steps", save_steps=3, csv_log=True, loss_curve=True)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(values))
    assert cli.main(["train", str(config), "--learning_rate", "0.01"]) == 0
    run_dir = tmp_path / "run"
    assert {"adapter_model.safetensors", "checkpoint-3", "log.csv", "loss_curve.png", "run_config.json"} <= set(
        os.listdir(run_dir)
    )
    assert json.loads((run_dir / "checkpoint-3" / "trainer_state.json").read_text())["log_history"][0]["learning_rate"] == 0.01

    # A fresh process evaluates the adapter-only checkpoint (the bases come from the ids it records).
    result = subprocess.run(
        [sys.executable, "-m", "hf_vadapter.cli", "evaluate", "--checkpoint", str(run_dir / "checkpoint-3"),
         "--output_dir", str(tmp_path / "eval"), "--dataset", "synthetic", "--split", "test", "--num_eval_images", "2",
         "--render_size", "32", "--batch_size", "6", "--max_new_tokens", "4"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {"cider", "bleu", "vqa_accuracy", "vqa_accuracy_position"} <= set(metrics)
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 12


def _long_options(parser) -> set:
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


def test_every_subcommand_accepts_both_flag_spellings():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        options = _long_options(sub)
        for option in options:
            assert "--" + option[2:].replace("-", "_") in options, (name, option)
            assert "--" + option[2:].replace("_", "-") in options, (name, option)
    generate = parser.parse_args(["generate", "ckpt", "image.png", "--max_new_tokens", "4", "--num_beams", "2"])
    assert (generate.max_new_tokens, generate.num_beams) == (4, 2)
    assert parser.parse_args(["quickstart", "--output_dir", "out"]).output_dir == "out"


@pytest.mark.parametrize(
    "columns, task, prompt",
    [
        (dict(text=["a red circle."]), "caption", "Describe the image."),
        (dict(caption=["a red circle."]), "caption", "Describe the image."),
        (dict(question=["what color is the circle?"], answer=["red"]), "vqa", "what color is the circle?"),
    ],
)
def test_train_dataset_dir_with_common_columns_is_mapped(tmp_path, caplog, columns, task, prompt):
    import datasets
    from PIL import Image

    from hf_vadapter.training.arguments import DataArguments
    from hf_vadapter.training.data import load_splits

    user = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), (200, 0, 0))], **columns})
    user.save_to_disk(str(tmp_path / "mine"))
    with caplog.at_level("WARNING"):
        train, _ = load_splits(DataArguments(dataset=str(tmp_path / "mine")))
    assert (train[0]["task"], train[0]["prompt"]) == (task, prompt)
    assert train[0]["target"] in ("a red circle.", "red")
    assert any("from_user_dataset(image_column='image'" in record.getMessage() for record in caplog.records)
