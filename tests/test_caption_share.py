"""Caption share: the caption rows repeated to a chosen share of the training rows, as a training run sees them."""

import logging
from collections import Counter

import pytest

from hf_vadapter.data.synthetic import build_synthetic_dataset
from hf_vadapter.modeling.errors import InvalidDatasetError
from hf_vadapter.training import run_training
from hf_vadapter.training.arguments import DataArguments
from hf_vadapter.training.caption_share import caption_copies, with_caption_share
from test_training_helpers import arguments, bases  # noqa: F401


@pytest.mark.parametrize(
    "captions, others, share, copies",
    [(2000, 10000, 0.5, 5), (2000, 10000, 0.67, 10), (2000, 10000, 0.33, 2), (2000, 10000, 0.1, 1), (1, 1, 0.5, 1)],
)
def test_caption_copies_reach_the_share(captions, others, share, copies):
    assert caption_copies(captions, others, share) == copies


def test_captions_are_repeated_and_every_other_row_kept_once():
    dataset = build_synthetic_dataset("train", 4, image_size=32, seed=0)  # 4 captions, 20 questions
    shared = with_caption_share(dataset, 0.5)
    tasks = Counter(shared["task"])
    assert tasks["caption"] == 20 and tasks["vqa"] == 20
    key = lambda row: (row["image_id"], row["prompt"], row["target"])  # noqa: E731
    before = Counter(key(row) for row in dataset.select_columns(["image_id", "prompt", "target"]))
    after = Counter(key(row) for row in shared.select_columns(["image_id", "prompt", "target"]))
    for row, count in before.items():
        is_caption = row[1] == dataset[0]["prompt"]
        assert after[row] == (5 if is_caption else 1) * count
    assert shared.column_names == dataset.column_names


def test_a_share_the_data_already_has_leaves_it_alone(caplog):
    dataset = build_synthetic_dataset("train", 2, image_size=32, seed=0)
    with caplog.at_level(logging.INFO):
        assert with_caption_share(dataset, 0.1) is dataset
    assert "already 2 of 12" in caplog.text


def test_data_without_captions_is_refused():
    dataset = build_synthetic_dataset("train", 2, image_size=32, seed=0, tasks=("vqa",))
    with pytest.raises(InvalidDatasetError, match="needs caption rows"):
        with_caption_share(dataset, 0.5)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2, 1.5])
def test_shares_outside_zero_to_one_are_refused(share):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        DataArguments(dataset="synthetic", caption_share=share)


@pytest.mark.parametrize("use_feature_cache", [False, True])
def test_training_sees_the_shared_rows(bases, tmp_path, use_feature_cache):  # noqa: F811
    run = run_training(*arguments(
        bases, tmp_path / "run", describe_then_answer=True, caption_share=0.5, max_steps=2,
        use_feature_cache=use_feature_cache, feature_cache_dir=str(tmp_path / "cache"),
    ))  # fmt: skip
    trained = run.trainer.train_dataset
    assert Counter(trained["task"]) == {"caption": 10, "vqa": 10}  # 2 captions x 5, 2 images x 5 questions
    assert sum(prompt.startswith("Context: ") for prompt in trained["prompt"]) == 10
    if use_feature_cache:  # every repeated row finds its image's cached features
        assert all(trained["image_hash"]) and len(set(trained["image_hash"])) == 2
