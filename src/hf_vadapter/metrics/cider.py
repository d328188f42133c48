"""CIDEr-D over a whole evaluation set, computed by pycocoevalcap's `Cider` scorer (n = 1..4, sigma = 6, x10).

CIDEr weights n-grams by their inverse document frequency over the references of all images scored together, so
the score of a caption depends on the rest of the set: the mean of per-batch scores is not the set's score. This
module therefore only stores captions in `add`/`add_batch` and scores everything once, in `compute`.

Captions are tokenised by `captioning.tokenize_caption` (lower-case, punctuation dropped), a Java-free stand-in for
the PTB tokenizer of the COCO caption evaluation. An `evaluate` metric module: load it with
`evaluate.load("<path to this file>")` or `hf_vadapter.metrics.load_metric("cider")`.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from pycocoevalcap.cider.cider import Cider as CocoCider

from .captioning import check_caption_inputs, tokenize_caption

_CITATION = """\
@inproceedings{vedantam2015cider,
  title = {{CIDEr}: Consensus-based Image Description Evaluation},
  author = {Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle = {CVPR},
  year = {2015}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one generated caption per image.
    references (`list[list[str]]`): the reference captions of each image (at least one).
Returns:
    cider (`float`): CIDEr-D of the whole set (0 for no overlap; about 1 for good COCO captions; up to 10 per image).
        Needs at least two images to be non-zero: n-grams found in every image's references get zero weight.
Examples:
    >>> cider = hf_vadapter.metrics.load_metric("cider")
    >>> cider.add_batch(predictions=["a cat on a mat"], references=[["a cat sits on a mat", "a cat on the mat"]])
    >>> cider.add_batch(predictions=["a red bus"], references=[["a red bus on a street", "a bus"]])
    >>> round(cider.compute()["cider"], 3)
    3.669
"""


class Cider(evaluate.Metric):
    """CIDEr-D of a set of generated captions, by pycocoevalcap's scorer."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its inputs: a caption and the list of reference captions."""
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
        """Tokenise every stored caption and score the whole set at once."""
        check_caption_inputs("CIDEr", predictions, references)
        candidates = {index: [tokenize_caption(caption)] for index, caption in enumerate(predictions)}
        ground_truth = {index: [tokenize_caption(c) for c in captions] for index, captions in enumerate(references)}
        score, _ = CocoCider().compute_score(ground_truth, candidates)
        return {"cider": float(score)}
