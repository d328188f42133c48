"""VQAv2 answer normalisation and accuracy, in plain Python.

This is the one implementation behind both `hf_vadapter.metrics.vqa_accuracy_score` and the `vqa_accuracy.py`
evaluate module (which imports it relatively, so `evaluate.load` copies this file next to the metric script).
It must therefore stay free of relative imports itself: evaluate only copies a script's direct local imports.

The rules follow the official VQAv2 evaluation (``vqaEval.py`` of GT-Vision-Lab/VQA):

1. newlines and tabs become spaces, surrounding whitespace is stripped;
2. punctuation: each mark of `PUNCTUATION` is deleted when it touches a space (``"yes !"``) or when the answer holds
   a digit-comma-digit number (``"1,000"``), and is replaced by a space otherwise (``"black/white"``);
   then every period not followed by a digit is deleted (``"yes."`` -> ``"yes"``, ``"2.5"`` stays);
3. lower-casing, number words ``none``/``zero`` .. ``ten`` become digits, the articles ``a``/``an``/``the`` are
   dropped, and apostrophe-less contractions get their apostrophe back (``"dont"`` -> ``"don't"``);
4. accuracy of a prediction against n human answers: for each annotator left out in turn, the credit is
   ``min(#other annotators who gave the prediction / 3, 1)``; the accuracy is the mean over the n leave-one-out sets.

One deliberate difference: the official script normalises references only partly (punctuation alone, and only
when the annotators disagree), relying on the released VQAv2 answers being normalised already. Here references go
through the same full normalisation as the prediction. Normalisation is idempotent, so wherever the references are
already normal (``normalize_answer(ref) == ref``) the scores are the official ones; elsewhere this scores equivalent
answers as equal where the official script cannot (ten ``"T-shirt"`` never match any normalised prediction there).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

# The punctuation marks of the official evaluation. The apostrophe and the colon are not among them.
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Word -> word with its apostrophes, as in the official table. Its capitalised keys ("Im", "Ive", "Id've") and
# identity entries ("let's", "she's") can never change a lower-cased word and are left out; its one odd entry,
# "somebody'd" -> "somebodyd", is kept so that scores stay the official ones.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

# Human answers that must agree with a prediction for full credit.
FULL_CREDIT_VOTES = 3

_NUMBER_WITH_COMMA = re.compile(r"\d,\d")
# The official pattern is meant to spare decimal points; in effect it deletes every period not followed by a digit.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def strip_punctuation(text: str) -> str:
    """Apply the official punctuation rule (step 2 of the module docstring) to one answer."""
    joins_number = _NUMBER_WITH_COMMA.search(text) is not None
    stripped = text
    for mark in PUNCTUATION:
        delete = joins_number or f"{mark} " in text or f" {mark}" in text
        stripped = stripped.replace(mark, "" if delete else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", stripped)


def normalize_words(text: str) -> str:
    """Lower-case, map number words to digits, drop articles and restore contractions (step 3)."""
    words = (NUMBER_WORDS.get(word, word) for word in text.lower().split())
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """Normalise one VQA answer with the official VQAv2 rules, e.g. ``"Two dogs."`` -> ``"2 dogs"``."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return normalize_words(strip_punctuation(text))


def answer_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy of one prediction against its human answers, in [0, 1].

    With n answers of which m equal the prediction (after normalisation), the m annotators who gave it each leave
    m - 1 agreeing others and the n - m remaining ones leave m, so the leave-one-out mean is
    ``(m * min((m - 1) / 3, 1) + (n - m) * min(m / 3, 1)) / n``: 0.3, 0.6, 0.9 and 1.0 for m = 1..4 of 10.

    Raises:
        ValueError: fewer than two references. Leave-one-out needs two; a single answer would score 0 whatever the
            prediction. For exact-match data, repeat the answer (ten copies give 1.0 for a match).
    """
    if len(references) < 2:
        raise ValueError(
            f"VQA accuracy needs at least 2 reference answers per question (it averages over the sets that leave "
            f"one annotator out); got {list(references)!r} for the prediction {prediction!r}. "
            f"Repeat a single exact answer 10 times for exact-match scoring."
        )
    answer = normalize_answer(prediction)
    matches = sum(normalize_answer(reference) == answer for reference in references)
    others = len(references) - matches
    total = matches * _credit(matches - 1) + others * _credit(matches)
    return total / len(references)


def _credit(agreeing_humans: int) -> float:
    """Credit for a prediction that this many of the remaining annotators gave."""
    return min(agreeing_humans / FULL_CREDIT_VOTES, 1.0)


def vqa_accuracies(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """VQA accuracy of each prediction against the human answers at the same position, each in [0, 1].

    Raises:
        ValueError: no predictions, lengths that differ, or a question with fewer than two references.
    """
    _check_aligned(predictions, references=references)
    return [answer_accuracy(prediction, answers) for prediction, answers in zip(predictions, references)]


def vqa_accuracy_score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean VQA accuracy in [0, 1] (multiply by 100 for the percentages papers report)."""
    return _mean(vqa_accuracies(predictions, references))


def vqa_accuracy_report(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    answer_types: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
) -> dict[str, float | dict[str, float]]:
    """Mean VQA accuracy in [0, 1] under ``"accuracy"``, with optional per-group means.

    Args:
        predictions: one answer per question.
        references: the human answers of each question (VQAv2 has 10).
        answer_types: optional label per question (VQAv2: ``"yes/no"``, ``"number"``, ``"other"``); adds
            ``"per_answer_type"``: label -> mean accuracy of its questions.
        question_types: optional label per question (VQAv2: ``"what color is the"``, ...); adds
            ``"per_question_type"`` in the same way.

    Raises:
        ValueError: as `vqa_accuracies`, or labels whose number differs from the predictions'.
    """
    _check_aligned(predictions, answer_types=answer_types, question_types=question_types)
    scores = vqa_accuracies(predictions, references)
    report: dict[str, float | dict[str, float]] = {"accuracy": _mean(scores)}
    for key, labels in (("per_answer_type", answer_types), ("per_question_type", question_types)):
        if labels is not None:
            report[key] = _group_means(scores, labels)
    return report


def _check_aligned(predictions: Sequence[str], **columns: Sequence[object] | None) -> None:
    """Raise ValueError if there are no predictions or a given column's length differs from theirs."""
    if not predictions:
        raise ValueError("VQA accuracy needs at least one prediction.")
    for name, values in columns.items():
        if values is not None and len(values) != len(predictions):
            raise ValueError(f"Got {len(predictions)} predictions but {len(values)} {name}.")


def _mean(values: Sequence[float]) -> float:
    """Arithmetic mean of a non-empty sequence."""
    return sum(values) / len(values)


def _group_means(scores: Sequence[float], labels: Sequence[str]) -> dict[str, float]:
    """Mean score per label, labels in order of first appearance."""
    groups: dict[str, list[float]] = defaultdict(list)
    for score, label in zip(scores, labels):
        groups[label].append(score)
    return {label: _mean(group) for label, group in groups.items()}
