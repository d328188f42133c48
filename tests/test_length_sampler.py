"""`LengthBucketSampler`: similar lengths per batch, batches in a random order, rows of a bucket mixed."""

from hf_vadapter.training.length_sampler import LengthBucketSampler


def _batches(sampler, batch_size):
    order = list(sampler)
    return order, [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_every_row_once_and_batches_stay_in_one_bucket():
    # Two kinds of short rows that differ by 2 tokens (one bucket) and long rows: 3 * 40 rows.
    lengths = [20] * 40 + [22] * 40 + [45] * 40
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=0)
    order, batches = _batches(sampler, 8)
    assert sorted(order) == list(range(120))
    buckets_per_batch = [len({lengths[i] // 8 for i in batch}) for batch in batches]
    assert sum(count > 1 for count in buckets_per_batch) <= 1  # at most the batch that straddles two buckets


def test_rows_of_one_bucket_mix_and_batches_come_in_random_order():
    lengths = [20] * 40 + [22] * 40 + [45] * 40
    _, batches = _batches(LengthBucketSampler(lengths, batch_size=8, seed=0), 8)
    short = [batch for batch in batches if all(lengths[i] < 40 for i in batch)]
    assert any(len({lengths[i] for i in batch}) == 2 for batch in short)  # 20s and 22s share batches
    kinds = ["long" if lengths[batch[0]] == 45 else "short" for batch in batches]
    runs = sum(a != b for a, b in zip(kinds, kinds[1:]))
    assert runs >= 3  # not one block of long batches then one of short ones


def test_the_short_batch_comes_last_and_the_order_follows_seed_and_epoch():
    lengths = list(range(30))
    sampler = LengthBucketSampler(lengths, batch_size=8, bucket_width=1, seed=3)
    order, batches = _batches(sampler, 8)
    assert [len(batch) for batch in batches] == [8, 8, 8, 6]
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
