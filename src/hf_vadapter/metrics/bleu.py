"""Corpus BLEU-1..4 with any number of references per prediction, computed by sacrebleu.

Scores are on sacrebleu's 0-100 scale. `bleu` is BLEU-4; `bleu_1` .. `bleu_4` are the cumulative BLEU-n of
caption papers (brevity penalty times the geometric mean of the 1..n-gram precisions); `precisions` are the
modified 1..4-gram precisions. Corpus BLEU pools n-gram counts over the whole set, so `add_batch` only stores
captions and `compute` scores them all at once.

An `evaluate` metric module: load it with `evaluate.load("<path to this file>")` or
`hf_vadapter.metrics.load_metric("bleu")`.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from sacrebleu.metrics import BLEU

from .captioning import check_caption_inputs

MAX_ORDER = 4

_CITATION = """\
@inproceedings{post2018sacrebleu,
  title = {A Call for Clarity in Reporting {BLEU} Scores},
  author = {Post, Matt},
  booktitle = {Proceedings of the Third Conference on Machine Translation},
  year = {2018}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one generated text per example.
    references (`list[list[str]]`): the references of each example (at least one; the number may vary).
    tokenize (`str`, optional, `compute` only): sacrebleu tokenizer, default "13a".
    lowercase (`bool`, optional, `compute` only): case-insensitive BLEU, default False.
Returns:
    bleu (`float`): corpus BLEU-4, 0-100.
    bleu_1 .. bleu_4 (`float`): corpus BLEU-n, 0-100.
    precisions (`list[float]`): the modified 1..4-gram precisions, 0-100.
    brevity_penalty (`float`): in (0, 1].
Examples:
    >>> bleu = hf_vadapter.metrics.load_metric("bleu")
    >>> result = bleu.compute(predictions=["a cat on the mat"], references=[["a cat on the mat", "a cat"]])
    >>> round(result["bleu"], 2), result["precisions"]
    (100.0, [100.0, 100.0, 100.0, 100.0])
"""


class Bleu(evaluate.Metric):
    """Corpus BLEU-1..4 by sacrebleu, with a variable number of references."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its inputs: a text and the list of its references."""
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        tokenize: str = "13a",
        lowercase: bool = False,
    ) -> dict[str, float | list[float]]:
        """Score every stored prediction at corpus level, once per maximum n-gram order."""
        check_caption_inputs("BLEU", predictions, references)
        streams = reference_streams(references)
        scores = {
            order: BLEU(max_ngram_order=order, tokenize=tokenize, lowercase=lowercase).corpus_score(
                list(predictions), streams
            )
            for order in range(1, MAX_ORDER + 1)
        }
        full = scores[MAX_ORDER]
        return {
            "bleu": full.score,
            **{f"bleu_{order}": score.score for order, score in scores.items()},
            "precisions": list(full.precisions),
            "brevity_penalty": full.bp,
        }


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Turn per-example reference lists into sacrebleu's reference streams (stream i holds every example's i-th
    reference), padding with None, which sacrebleu skips, where an example has fewer references than the most."""
    width = max(len(captions) for captions in references)
    return [[captions[i] if i < len(captions) else None for captions in references] for i in range(width)]
