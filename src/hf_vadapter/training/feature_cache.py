"""A cache of the frozen tower's features, stored with `datasets` (Arrow, memory-mapped) and keyed by everything
that determines them.

The tower is frozen, so the features an adapter reads from an image never change during training: compute them once
and train from them (`image_features` instead of `pixel_values`), skipping the tower's forward pass at every step.

Layout: ``<cache_dir>/<key>/`` holds ``key.json`` (what the key was computed from, for people) and shards
``shard-<digest>/`` with ``features.arrow`` (columns ``image_hash`` and ``features`` [T, L, S, Dv]) and ``done.json``.

- **Key.** A hash of the tower id and revision, its config and a digest of its weights, the feature layers /
  selection / norm, the image processor's config and image size, and the storage dtype. Change any of them and the
  key changes, so stale features are never read. Images are looked up by a hash of their encoded bytes.
- **Atomic writes.** A shard is written into a temporary folder, flushed, and renamed into place with its
  ``done.json``; readers only open ``shard-*`` folders holding ``done.json`` whose row count matches, so a
  half-written entry (a killed process) is never used. Another run computing the same images just finds them.
"""

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import torch
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from ..modeling.processing_vadapter import to_rgb
from ..modeling.safe_io import fsync_tree

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
HASH_COLUMN = "image_hash"
FEATURES_FILE = "features.arrow"
DONE_FILE = "done.json"
KEY_FILE = "key.json"
STORAGE_DTYPES = ("float16", "float32")
_RGB = datasets.Image(mode="RGB")


def default_cache_dir() -> Path:
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return Path(home) / "hf_vadapter" / "features"


def image_bytes(value) -> Optional[bytes]:
    """The encoded bytes of an `image` column value ({"bytes", "path"} dict, path string or PIL image), or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            return Path(value["path"]).read_bytes()
        return None
    if isinstance(value, (str, os.PathLike)):
        return Path(value).read_bytes()
    buffer = io.BytesIO()  # a PIL image: hash its pixels losslessly
    value.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def image_hash(value) -> str:
    data = image_bytes(value)
    return "" if data is None else hashlib.sha256(data).hexdigest()


def decode_image(value):
    """An `image` column value as the RGB PIL image the `datasets.Image(mode="RGB")` feature would give."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = {"path": str(value), "bytes": None}
    if isinstance(value, dict):
        value = _RGB.decode_example(value)
    return to_rgb(value)


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of every parameter and buffer of `module` (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")
    return digest.hexdigest()


def cache_key_fields(model, image_processor, storage_dtype: str) -> Dict:
    """Everything the cached features depend on."""
    config = model.config
    adapter = config.adapter
    tower_config = config.vision_config.to_dict()
    for volatile in ("transformers_version", "_name_or_path"):
        tower_config.pop(volatile, None)
    processor_config = image_processor.to_dict()
    processor_config.pop("processor_class", None)
    return {
        "format_version": CACHE_FORMAT_VERSION,
        "tower": config.vision_model_name_or_path,
        "tower_revision": config.vision_revision,
        "tower_config": tower_config,
        "tower_weights": weights_digest(model.vision_tower),
        "tower_dtype": str(model.vision_tower.dtype),
        "feature_layers": list(adapter.feature_layers),
        "feature_select": adapter.feature_select,
        "feature_norm": adapter.feature_norm,
        "image_size": config.image_size,
        "image_processor": processor_config,
        "storage_dtype": storage_dtype,
    }


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class FeatureStore:
    """Read-only view of one cache entry: image hash -> features. Picklable (data loader workers re-map the files)."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        self._shards: List[datasets.Dataset] = []
        self._index: Dict[str, Tuple[int, int]] = {}
        self.refresh()

    def refresh(self) -> None:
        """(Re)read the complete shards of the entry; incomplete or corrupt ones are skipped."""
        self._shards, self._index = [], {}
        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("shard-*")):
            loaded = self._open_shard(shard)
            if loaded is None:
                continue
            number = len(self._shards)
            # Arrow access keeps the stored dtype (the numpy formatter upcasts fp16) and is the fastest path.
            self._shards.append(loaded.with_format("arrow", columns=["features"]))
            for row, digest in enumerate(loaded[HASH_COLUMN]):
                self._index.setdefault(digest, (number, row))

    @staticmethod
    def _open_shard(shard: Path) -> Optional[datasets.Dataset]:
        done = shard / DONE_FILE
        if not done.is_file():
            logger.warning("Ignoring the incomplete feature cache shard %s (no %s).", shard, DONE_FILE)
            return None
        try:
            expected = json.loads(done.read_text())["num_rows"]
            loaded = datasets.Dataset.from_file(str(shard / FEATURES_FILE))
        except (OSError, ValueError, KeyError) as error:
            logger.warning("Ignoring the unreadable feature cache shard %s: %s", shard, error)
            return None
        if loaded.num_rows != expected:
            logger.warning(
                "Ignoring the feature cache shard %s: %d rows, %d expected.", shard, loaded.num_rows, expected
            )
            return None
        return loaded

    def __contains__(self, digest: str) -> bool:
        return digest in self._index

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, digests: Sequence[str]) -> torch.Tensor:
        """Features of the images with these hashes, stacked: [N, T, L, S, Dv]."""
        missing = [digest for digest in digests if digest not in self._index]
        if missing:
            raise KeyError(
                f"{len(missing)} images are not in the feature cache {self.folder} (e.g. {missing[0][:12]})."
            )
        out: List[Optional[np.ndarray]] = [None] * len(digests)
        by_shard: Dict[int, List[Tuple[int, int]]] = {}
        for position, digest in enumerate(digests):
            shard, row = self._index[digest]
            by_shard.setdefault(shard, []).append((position, row))
        for shard, places in by_shard.items():
            column = self._shards[shard][[row for _, row in places]]["features"]
            for (position, _), features in zip(places, column.combine_chunks().to_numpy()):
                out[position] = features
        return torch.from_numpy(np.stack(out))


class FeatureCache:
    """Builds and opens the cache entry of one model (tower + feature selection) and image processor.

    Args:
        model: a `VisionAdapterForCausalLM`; only its tower and config are used.
        image_processor: the processor's image processor (its config is part of the key).
        cache_dir: the cache root (default `default_cache_dir()`).
        storage_dtype: "float16" (half the disk) or "float32" (exact).
        batch_size: images per tower forward when computing.
    """

    def __init__(
        self,
        model,
        image_processor,
        cache_dir: Union[str, Path, None] = None,
        storage_dtype: str = "float16",
        batch_size: int = 32,
    ):
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype!r}.")
        self.model = model
        self.image_processor = image_processor
        self.storage_dtype = storage_dtype
        self.batch_size = batch_size
        self.key_fields = cache_key_fields(model, image_processor, storage_dtype)
        self.key = _digest(self.key_fields)[:32]
        self.folder = Path(cache_dir or default_cache_dir()) / self.key
        self.store = FeatureStore(self.folder)

    # ------------------------------------------------------------------------------------------ data sets

    def prepare(self, dataset: datasets.Dataset, compute: bool = True) -> datasets.Dataset:
        """Add an `image_hash` column, compute the features of images not cached yet, and stop decoding images.

        The returned data set keeps every column (its `image` column undecoded), so the collator can feed cached
        features for training and still decode images where it needs pixels (generation).
        """
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
        if HASH_COLUMN not in dataset.column_names:
            dataset = dataset.map(
                lambda images: {HASH_COLUMN: [image_hash(image) for image in images]},
                input_columns="image",
                batched=True,
                desc="Hashing images",
            )
        if compute:
            self.compute_missing(dataset)
        return dataset

    def compute_missing(self, dataset: datasets.Dataset) -> int:
        """Compute and store the features of the data set's images that the cache lacks; returns how many."""
        self.store.refresh()
        first_row: Dict[str, int] = {}
        for row, digest in enumerate(dataset[HASH_COLUMN]):
            if digest and digest not in self.store and digest not in first_row:
                first_row[digest] = row
        if not first_row:
            return 0
        digests = sorted(first_row, key=first_row.get)
        images = dataset.select_columns(["image"])
        self._write_shard(digests, lambda digest: images[first_row[digest]]["image"])
        self.store.refresh()
        return len(digests)

    # ------------------------------------------------------------------------------------------ writing

    @torch.no_grad()
    def features_of(self, images: Sequence) -> torch.Tensor:
        """Tower features [N, T, L, S, Dv] of PIL images (or image column values), in the storage dtype."""
        pil = [decode_image(image) for image in images]
        pixel_values = self.image_processor(pil, return_tensors="pt")["pixel_values"]
        device = self.model.vision_tower.device
        features = self.model.get_vision_features(pixel_values.to(device))
        return features.to("cpu", getattr(torch, self.storage_dtype))

    def _write_shard(self, digests: List[str], image_of) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / KEY_FILE
        if not key_file.exists():
            key_file.write_text(json.dumps(self.key_fields, indent=1, sort_keys=True, default=str) + "\n")
        final = self.folder / f"shard-{_digest(digests)[:24]}"
        staging = Path(tempfile.mkdtemp(prefix=".tmp-shard-", dir=self.folder))
        try:
            writer, shape = None, None
            progress = tqdm(total=len(digests), desc="Caching tower features", unit="img")
            for start in range(0, len(digests), self.batch_size):
                chunk = digests[start : start + self.batch_size]
                features = self.features_of([image_of(digest) for digest in chunk]).numpy()
                if writer is None:
                    shape = tuple(features.shape[1:])
                    schema = datasets.Features(
                        {HASH_COLUMN: datasets.Value("string"), "features": datasets.Array4D(shape, self.storage_dtype)}
                    )
                    writer = ArrowWriter(features=schema, path=str(staging / FEATURES_FILE))
                writer.write_batch({HASH_COLUMN: chunk, "features": list(features)})
                progress.update(len(chunk))
            progress.close()
            writer.finalize()
            writer.close()
            (staging / DONE_FILE).write_text(json.dumps({"num_rows": len(digests), "shape": shape}) + "\n")
            fsync_tree(staging)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / DONE_FILE).is_file():  # not a complete copy from a concurrent run: replace it
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("Cached the tower features of %d images in %s.", len(digests), final)
