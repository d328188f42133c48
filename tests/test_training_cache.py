"""The tower feature cache: features == pixels, keys that change with everything the features depend on, and
entries that are only used when complete."""

import json

import pytest
import torch

import hf_vadapter
from conftest import build_model
from hf_vadapter.data import build_synthetic_dataset
from hf_vadapter.training import FeatureCache, FeatureStore, VisionAdapterCollator, run_training
from hf_vadapter.training.feature_cache import DONE_FILE, FEATURES_FILE, HASH_COLUMN
from test_training_helpers import LM, TOWER, arguments, bases  # noqa: F401


@pytest.fixture
def model_and_processor(bases):
    return build_model(*bases, hf_vadapter.MLPProjectorConfig(num_layers=1, feature_layers=[-2, -1]))


@pytest.fixture
def rows():
    return build_synthetic_dataset("train", 3, image_size=32)


def _batch_loss(model, collator, rows, indices):
    batch = collator([rows[index] for index in indices])
    with torch.no_grad():
        return model(**batch).loss, batch


def test_cached_features_give_the_pixel_loss(model_and_processor, rows, tmp_path):
    model, processor = model_and_processor
    cache = FeatureCache(model, processor.image_processor, cache_dir=tmp_path, storage_dtype="float32")
    cached_rows = cache.prepare(rows)
    assert len(cache.store) == 3  # one entry per image, not per row
    indices = [0, 1, 7, 13, 14]
    pixel_loss, pixel_batch = _batch_loss(model, VisionAdapterCollator(processor, 128), rows, indices)
    cache_loss, cache_batch = _batch_loss(model, VisionAdapterCollator(processor, 128, cache.store), cached_rows, indices)
    assert "pixel_values" in pixel_batch and "pixel_values" not in cache_batch
    assert cache_batch["image_features"].dtype == torch.float32
    assert torch.equal(pixel_batch["input_ids"], cache_batch["input_ids"])
    assert torch.equal(pixel_batch["labels"], cache_batch["labels"])
    torch.testing.assert_close(cache_loss, pixel_loss, rtol=0, atol=1e-5)

    half = FeatureCache(model, processor.image_processor, cache_dir=tmp_path, storage_dtype="float16")
    assert half.key != cache.key
    half_loss, half_batch = _batch_loss(model, VisionAdapterCollator(processor, 128, half.store), half.prepare(rows), indices)
    assert half_batch["image_features"].dtype == torch.float16
    torch.testing.assert_close(half_loss, pixel_loss, rtol=0, atol=5e-3)


def test_training_from_the_cache_matches_training_from_pixels(bases, tmp_path):
    pixels = run_training(*arguments(bases, tmp_path / "pixels", max_steps=3))
    cached = run_training(
        *arguments(
            bases,
            tmp_path / "cached",
            max_steps=3,
            use_feature_cache=True,
            feature_cache_dir=str(tmp_path / "cache"),
            feature_cache_dtype="float32",
        )
    )
    losses = [[entry["loss"] for entry in run.trainer.state.log_history if "loss" in entry] for run in (pixels, cached)]
    assert len(losses[0]) == 3
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=0, atol=1e-5)


def test_the_key_changes_with_what_the_features_depend_on(bases, model_and_processor, tmp_path):
    model, processor = model_and_processor
    key = FeatureCache(model, processor.image_processor, cache_dir=tmp_path).key
    assert FeatureCache(model, processor.image_processor, cache_dir=tmp_path).key == key  # stable

    other_layers, _ = build_model(*bases, hf_vadapter.MLPProjectorConfig(num_layers=1, feature_layers=[-1]))
    other_select, _ = build_model(
        *bases, hf_vadapter.MLPProjectorConfig(num_layers=1, feature_layers=[-2, -1], feature_norm=True)
    )
    assert FeatureCache(other_layers, processor.image_processor, cache_dir=tmp_path).key != key
    assert FeatureCache(other_select, processor.image_processor, cache_dir=tmp_path).key != key

    resized = type(processor.image_processor).from_dict(
        {**processor.image_processor.to_dict(), "image_mean": [0.4, 0.4, 0.4]}
    )
    assert FeatureCache(model, resized, cache_dir=tmp_path).key != key

    with torch.no_grad():  # a retrained / different tower under the same name
        next(model.vision_tower.parameters()).add_(1e-3)
    assert FeatureCache(model, processor.image_processor, cache_dir=tmp_path).key != key


def test_only_new_images_are_computed(model_and_processor, rows, tmp_path):
    model, processor = model_and_processor
    cache = FeatureCache(model, processor.image_processor, cache_dir=tmp_path, storage_dtype="float32")
    assert cache.compute_missing(cache.prepare(rows.select(range(6)), compute=False)) == 1
    assert cache.compute_missing(cache.prepare(rows, compute=False)) == 2  # images 2 and 3 only
    assert cache.compute_missing(cache.prepare(rows, compute=False)) == 0
    reopened = FeatureStore(cache.folder)  # another process opening the same entry
    assert len(reopened) == 3 and len(list(cache.folder.glob("shard-*"))) == 2


def test_half_written_entries_are_never_used(model_and_processor, rows, tmp_path):
    model, processor = model_and_processor
    cache = FeatureCache(model, processor.image_processor, cache_dir=tmp_path, storage_dtype="float32")
    prepared = cache.prepare(rows, compute=False)
    digests = sorted(set(prepared[HASH_COLUMN]))
    cache.folder.mkdir(parents=True)
    # A process killed while writing: its staging folder, a shard renamed without its done marker, and a shard
    # whose marker promises more rows than the file holds. All hold wrong (zero) features.
    complete = FeatureCache(model, processor.image_processor, cache_dir=tmp_path / "scratch", storage_dtype="float32")
    complete.prepare(rows)
    source = next(complete.folder.glob("shard-*"))
    for name, marker in ((".tmp-shard-killed", None), ("shard-nodone", None), ("shard-short", {"num_rows": 99})):
        target = cache.folder / name
        target.mkdir()
        (target / FEATURES_FILE).write_bytes((source / FEATURES_FILE).read_bytes())
        if marker is not None:
            (target / DONE_FILE).write_text(json.dumps(marker))
    truncated = cache.folder / "shard-truncated"
    truncated.mkdir()
    (truncated / FEATURES_FILE).write_bytes((source / FEATURES_FILE).read_bytes()[:100])
    (truncated / DONE_FILE).write_text(json.dumps({"num_rows": 3}))

    store = FeatureStore(cache.folder)
    assert len(store) == 0 and not any(digest in store for digest in digests)
    assert cache.compute_missing(prepared) == 3  # recomputed, not taken from the broken entries
    torch.testing.assert_close(cache.store.lookup(digests), complete.store.lookup(digests), rtol=0, atol=0)
