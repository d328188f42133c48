"""`LengthBucketSampler`: batches of similar length, in a random order, with mixed rows inside each length bucket.

transformers' `LengthGroupedSampler` sorts each mega-batch by exact length and hands the batches out in that order.
On data where a row's length gives away its kind (captions vs each question type), that trains on runs of one kind
at a time: measured on the built-in scenes, 500 steps that way ended at twice the loss of random batches. Here rows are
sorted by length rounded to a bucket (so rows of one bucket stay shuffled together), cut into batches, and the batches
are shuffled.
"""

from typing import Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


class LengthBucketSampler(Sampler[int]):
    """Row indices such that each run of `batch_size` holds rows of about the same length.

    Args:
        lengths: token count of every row.
        batch_size: rows per batch (across processes and accumulation steps).
        bucket_width: lengths within one `bucket_width` count as equal, so their rows mix.
        mega_batches: rows are grouped within windows of this many batches of a random permutation.
        seed: the order follows `seed` and the epoch (`set_epoch`).
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, bucket_width: int = 8, mega_batches: int = 50, seed: int = 0
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.bucket_width = bucket_width
        self.window = batch_size * mega_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches: List[List[int]] = []
        for start in range(0, len(order), self.window):
            # A stable sort keeps the random order among rows of one bucket.
            window = sorted(order[start : start + self.window], key=lambda i: self.lengths[i] // self.bucket_width)
            batches.extend(window[i : i + self.batch_size] for i in range(0, len(window), self.batch_size))
        # Only the very last batch can be short; it stays last so that every other batch keeps its rows together.
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else []
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[position]
        yield from short
