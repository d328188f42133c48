"""VQAv2 accuracy: official answer normalisation, then min(#humans who gave the answer / 3, 1), averaged over the
sets of annotators that leave one out, and over questions. Scores are in [0, 1].

An `evaluate` metric module: load it with `evaluate.load("<path to this file>")` or
`hf_vadapter.metrics.load_metric("vqa_accuracy")`. The rules live in `vqa_scoring.py`, which evaluate copies along.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate

from .vqa_scoring import vqa_accuracy_report

_CITATION = """\
@inproceedings{goyal2017vqav2,
  title = {Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author = {Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle = {CVPR},
  year = {2017}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one predicted answer per question.
    references (`list[list[str]]`): the human answers of each question (VQAv2 has 10; at least 2).
    answer_types (`list[str]`, optional, `compute` only): a label per question, e.g. "yes/no", "number", "other".
    question_types (`list[str]`, optional, `compute` only): a label per question, e.g. "what color is the".
        These two are keyword arguments of `compute`, not inputs: `add_batch` does not store them, so after
        `add_batch` calls pass them for all questions, in order, to `compute`.
Returns:
    accuracy (`float`): mean accuracy in [0, 1].
    per_answer_type (`dict[str, float]`): mean accuracy per answer type, when `answer_types` is given.
    per_question_type (`dict[str, float]`): mean accuracy per question type, when `question_types` is given.
Examples:
    >>> vqa = hf_vadapter.metrics.load_metric("vqa_accuracy")
    >>> vqa.compute(predictions=["Two."], references=[["2"] * 3 + ["3"] * 7])
    {'accuracy': 0.9}
"""


class VqaAccuracy(evaluate.Metric):
    """VQAv2 accuracy with the official answer normalisation."""

    def _info(self) -> evaluate.MetricInfo:
        """Describe the metric and its inputs: a predicted answer and the list of human answers."""
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            reference_urls=["https://visualqa.org/evaluation.html"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        answer_types: Sequence[str] | None = None,
        question_types: Sequence[str] | None = None,
    ) -> dict[str, float | dict[str, float]]:
        """Score every stored prediction; see `vqa_scoring.vqa_accuracy_report`."""
        return vqa_accuracy_report(predictions, references, answer_types, question_types)
