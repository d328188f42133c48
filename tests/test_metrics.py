"""Tests of hf_vadapter.metrics: VQAv2 normalisation and accuracy, CIDEr-D, BLEU, and offline loading by path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from itertools import combinations
from pathlib import Path

import evaluate
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.cider.cider import Cider as CocoCider

from hf_vadapter.metrics import (
    METRIC_NAMES,
    load_metric,
    metric_path,
    normalize_answer,
    vqa_accuracy_report,
    vqa_accuracy_score,
)
from hf_vadapter.metrics.captioning import tokenize_caption
from hf_vadapter.metrics.vqa_scoring import answer_accuracy


def load(name: str) -> evaluate.EvaluationModule:
    """A packaged metric that keeps its stored predictions in memory rather than in the HF cache."""
    return load_metric(name, keep_in_memory=True)


# --------------------------------------------------------------------------------------------------------------------
# VQA normalisation


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        ("yes.", "yes"),  # a period not followed by a digit is deleted
        ("Yes", "yes"),
        ("the cat", "cat"),  # articles are dropped
        ("a dog", "dog"),
        ("an apple", "apple"),
        ("The Two Dogs.", "2 dogs"),
        ("two", "2"),  # number words become digits
        ("none", "0"),
        ("Ten", "10"),
        ("dont", "don't"),  # contractions get their apostrophe back
        ("isnt it", "isn't it"),
        ("don't", "don't"),  # the apostrophe is not punctuation
        ("1,000", "1000"),  # a comma inside a number is deleted, not spaced
        ("3,500 dollars?", "3500 dollars"),  # ... and then every mark is deleted
        ("2.5", "2.5"),  # a period before a digit is a decimal point and stays
        ("5.", "5"),
        ("e.g.", "eg"),
        ("3:00", "3:00"),  # the colon is not punctuation either
        ("black/white", "black white"),  # a mark inside a word becomes a space
        ("t-shirt", "t shirt"),
        ("yes !", "yes"),  # a mark touching a space is deleted ...
        ("red-white - blue", "redwhite blue"),  # ... everywhere in the answer, as in the official script
        ("  two\tdogs\n", "2 dogs"),  # tabs and newlines are spaces; whitespace collapses
        ("the", ""),
    ],
)
def test_normalize_answer_follows_the_official_rules(answer: str, normalised: str) -> None:
    assert normalize_answer(answer) == normalised


@settings(deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\t\n")))
def test_normalize_answer_is_idempotent(answer: str) -> None:
    """Normalising already normalised references (as VQAv2 ships them) changes nothing, so scores stay official."""
    once = normalize_answer(answer)
    assert normalize_answer(once) == once


# --------------------------------------------------------------------------------------------------------------------
# VQA accuracy


# With 10 answers of which m give the prediction, leaving out one of those m leaves m - 1 matches, and leaving out
# one of the other 10 - m leaves m; each leave-one-out set scores min(matches / 3, 1):
#   m = 1: (1 * 0/3 + 9 * 1/3) / 10 = 3 / 10 = 0.3
#   m = 2: (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6 / 10 = 0.6
#   m = 3: (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10 = 0.9
#   m = 4: (4 * 1 + 6 * 1) / 10 = 1.0   (three matches remain whoever is left out)
@pytest.mark.parametrize(("matches", "accuracy"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_answer_accuracy_leave_one_out_values(matches: int, accuracy: float) -> None:
    references = ["cat"] * matches + ["dog"] * (10 - matches)
    assert answer_accuracy("cat", references) == pytest.approx(accuracy)


def test_answer_accuracy_normalises_prediction_and_references() -> None:
    assert answer_accuracy("Two.", ["2"] * 10) == 1.0
    assert answer_accuracy("the dog", ["Dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    assert answer_accuracy("yes.", ["yes"] * 10) == 1.0
    # The official script leaves unanimous references untouched, so it would give 0 here; see vqa_scoring.
    assert answer_accuracy("t-shirt", ["T-shirt"] * 10) == 1.0


def test_answer_accuracy_with_fewer_than_ten_references() -> None:
    # Three identical answers: leaving any one out leaves 2 matches, min(2/3, 1) = 2/3, for each of the 3 sets.
    assert answer_accuracy("cat", ["cat"] * 3) == pytest.approx(2 / 3)
    # Two answers, one matching: (1 * 0/3 + 1 * 1/3) / 2 = 1/6.
    assert answer_accuracy("cat", ["cat", "dog"]) == pytest.approx(1 / 6)


@pytest.mark.parametrize("references", [[], ["cat"]])
def test_answer_accuracy_needs_two_references(references: list[str]) -> None:
    with pytest.raises(ValueError, match="at least 2 reference answers"):
        answer_accuracy("cat", references)


@settings(deadline=None)
@given(
    prediction=st.sampled_from(["cat", "Cat.", "the cat", "dog", "2", "two"]),
    references=st.lists(st.sampled_from(["cat", "a cat", "dog", "2", "Two", "3"]), min_size=2, max_size=10),
)
def test_answer_accuracy_equals_the_mean_over_leave_one_out_subsets(prediction: str, references: list[str]) -> None:
    """The closed form equals the official loop: every subset without one annotator, min(#matches / 3, 1)."""
    answer = normalize_answer(prediction)
    subsets = list(combinations([normalize_answer(r) for r in references], len(references) - 1))
    expected = sum(min(subset.count(answer) / 3, 1) for subset in subsets) / len(subsets)
    assert answer_accuracy(prediction, references) == pytest.approx(expected)


def test_vqa_accuracy_score_and_report() -> None:
    predictions = ["yes", "2", "red", "no"]
    references = [["yes"] * 10, ["two"] * 2 + ["3"] * 8, ["red"] * 10, ["yes"] * 9 + ["no"]]
    answer_types = ["yes/no", "number", "other", "yes/no"]
    # Per question: 1.0, 0.6 (2 of 10), 1.0, 0.3 (1 of 10).
    assert vqa_accuracy_score(predictions, references) == pytest.approx(2.9 / 4)
    report = vqa_accuracy_report(predictions, references, answer_types=answer_types)
    assert report["accuracy"] == pytest.approx(2.9 / 4)
    assert report["per_answer_type"] == pytest.approx({"yes/no": 0.65, "number": 0.6, "other": 1.0})
    assert "per_question_type" not in report


def test_vqa_accuracy_rejects_misaligned_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="at least one prediction"):
        vqa_accuracy_score([], [])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        vqa_accuracy_score(["a", "b"], [["a", "a"]])
    with pytest.raises(ValueError, match="1 predictions but 2 answer_types"):
        vqa_accuracy_report(["a"], [["a", "a"]], answer_types=["other", "other"])


def test_vqa_accuracy_module_accumulates_batches_and_groups_by_type() -> None:
    predictions = ["yes", "2", "red", "no"]
    references = [["yes"] * 10, ["two"] * 2 + ["3"] * 8, ["red"] * 10, ["yes"] * 9 + ["no"]]
    answer_types = ["yes/no", "number", "other", "yes/no"]
    question_types = ["is the", "how many", "what color is the", "is the"]
    metric = load("vqa_accuracy")
    metric.add_batch(predictions=predictions[:2], references=references[:2])
    metric.add_batch(predictions=predictions[2:], references=references[2:])
    result = metric.compute(answer_types=answer_types, question_types=question_types)
    assert result == vqa_accuracy_report(predictions, references, answer_types, question_types)
    assert result["per_question_type"] == pytest.approx({"is the": 0.65, "how many": 0.6, "what color is the": 1.0})


# --------------------------------------------------------------------------------------------------------------------
# CIDEr

CAPTIONS = ["A man riding a wave on top of a surfboard.", "Two dogs play in the grass!", "A red bus.", "a pizza"]
REFERENCES = [
    ["A man riding a wave on a surfboard.", "A surfer rides a large wave.", "Man surfing on a wave."],
    ["Two dogs are playing in the grass.", "Dogs run in a field.", "Two puppies playing on grass."],
    ["A red double-decker bus on a street.", "A bus driving down the road."],
    ["A pizza with cheese on a plate.", "A cheese pizza.", "A large pizza on a table.", "Pizza."],
]


@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        ("A man riding a wave.", "a man riding a wave"),
        ("Two dogs, playing!", "two dogs playing"),
        ("A dog's T-shirt (red)", "a dog's t-shirt red"),
        ("  spaces\tand\nnewlines ", "spaces and newlines"),
        ("...", ""),
    ],
)
def test_tokenize_caption_lowercases_and_drops_punctuation(caption: str, tokens: str) -> None:
    assert tokenize_caption(caption) == tokens


def test_cider_is_exactly_pycocoevalcap_on_the_tokenised_captions() -> None:
    candidates = {i: [tokenize_caption(caption)] for i, caption in enumerate(CAPTIONS)}
    ground_truth = {i: [tokenize_caption(c) for c in captions] for i, captions in enumerate(REFERENCES)}
    expected, _ = CocoCider().compute_score(ground_truth, candidates)
    assert load("cider").compute(predictions=CAPTIONS, references=REFERENCES) == {"cider": expected}
    assert expected > 0


def test_cider_hand_checked_values() -> None:
    # Each caption equals its only reference and shares no n-gram with the other image, so every n-gram has
    # idf log(2 images / 1) > 0 and each n-gram cosine is 1; n-gram orders a caption lacks contribute 0.
    # Four words: 10 * mean(1, 1, 1, 1) = 10. Two words (no 3- or 4-grams): 10 * mean(1, 1, 0, 0) = 5.
    four_words = ["a cat on mats", "the red bus stops"]
    two_words = ["a cat", "red bus"]
    cider = load("cider")
    assert cider.compute(predictions=four_words, references=[[c] for c in four_words])["cider"] == pytest.approx(10)
    assert cider.compute(predictions=two_words, references=[[c] for c in two_words])["cider"] == pytest.approx(5)
    # Disjoint from every reference: no shared n-gram, so 0.
    disjoint = ["green fields forever", "an old piano"]
    assert cider.compute(predictions=disjoint, references=[[c] for c in four_words])["cider"] == 0


def test_cider_rewards_matching_captions() -> None:
    cider = load("cider")
    identical = cider.compute(predictions=[refs[0] for refs in REFERENCES], references=REFERENCES)["cider"]
    generated = cider.compute(predictions=CAPTIONS, references=REFERENCES)["cider"]
    shuffled = cider.compute(predictions=CAPTIONS[1:] + CAPTIONS[:1], references=REFERENCES)["cider"]
    assert identical > generated > shuffled


def test_cider_is_computed_once_over_the_whole_set() -> None:
    """Document frequencies are set-level: batches must be pooled, never scored separately and averaged."""
    cider = load("cider")
    whole = cider.compute(predictions=CAPTIONS, references=REFERENCES)["cider"]
    for start in (0, 2):
        cider.add_batch(predictions=CAPTIONS[start : start + 2], references=REFERENCES[start : start + 2])
    assert cider.compute()["cider"] == whole
    per_batch = [
        cider.compute(predictions=CAPTIONS[start : start + 2], references=REFERENCES[start : start + 2])["cider"]
        for start in (0, 2)
    ]
    assert sum(per_batch) / len(per_batch) != pytest.approx(whole)
    # The extreme case: alone, an image's n-grams all occur in every image's references, so their idf
    # log(1 / 1) = 0 and even a perfect caption scores 0; in a set of two it scores 10 (see the hand-checked test).
    assert cider.compute(predictions=["a cat on mats"], references=[["a cat on mats"]])["cider"] == 0


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [([], [], "at least one prediction"), (["a cat", "a dog"], [["a cat"], []], "prediction 1 .* no reference")],
)
def test_caption_metrics_reject_missing_inputs(
    predictions: list[str], references: list[list[str]], message: str
) -> None:
    for name in ("cider", "bleu"):
        with pytest.raises(ValueError, match=message):
            load(name).compute(predictions=predictions, references=references)


# --------------------------------------------------------------------------------------------------------------------
# BLEU


def test_bleu_matches_sacrebleu() -> None:
    streams = [[refs[i] for refs in REFERENCES] for i in range(2)]  # every image has at least two references
    expected = sacrebleu.corpus_bleu(CAPTIONS, streams)
    result = load("bleu").compute(predictions=CAPTIONS, references=[refs[:2] for refs in REFERENCES])
    assert result["bleu"] == result["bleu_4"] == pytest.approx(expected.score)
    assert result["precisions"] == pytest.approx(expected.precisions)
    assert result["brevity_penalty"] == pytest.approx(expected.bp)


def test_bleu_variable_reference_counts_match_sacrebleu_streams() -> None:
    # sacrebleu reads one stream per reference slot; None marks an image without that many references.
    streams = [
        [REFERENCES[0][0], REFERENCES[1][0], REFERENCES[2][0], REFERENCES[3][0]],
        [REFERENCES[0][1], REFERENCES[1][1], REFERENCES[2][1], REFERENCES[3][1]],
        [REFERENCES[0][2], REFERENCES[1][2], None, REFERENCES[3][2]],
        [None, None, None, REFERENCES[3][3]],
    ]
    expected = sacrebleu.corpus_bleu(CAPTIONS, streams)
    assert load("bleu").compute(predictions=CAPTIONS, references=REFERENCES)["bleu"] == pytest.approx(expected.score)


def test_bleu_n_is_brevity_penalty_times_geometric_mean_of_precisions() -> None:
    result = load("bleu").compute(predictions=CAPTIONS, references=REFERENCES)
    assert all(p > 0 for p in result["precisions"])  # no smoothing involved
    for order in range(1, 5):
        log_mean = sum(math.log(p / 100) for p in result["precisions"][:order]) / order
        assert result[f"bleu_{order}"] == pytest.approx(100 * result["brevity_penalty"] * math.exp(log_mean))


def test_bleu_hand_checked_and_options_reach_sacrebleu() -> None:
    bleu = load("bleu")
    perfect = bleu.compute(predictions=["a cat on the mat"], references=[["a cat on the mat", "a dog"]])
    assert perfect["bleu"] == pytest.approx(100)
    assert perfect["precisions"] == pytest.approx([100, 100, 100, 100])
    shouted = ["A CAT ON THE MAT"]
    cased = bleu.compute(predictions=shouted, references=[["a cat on the mat"]])
    uncased = bleu.compute(predictions=shouted, references=[["a cat on the mat"]], lowercase=True)
    assert cased["precisions"][0] == 0
    assert uncased["bleu"] == pytest.approx(sacrebleu.corpus_bleu(shouted, [["a cat on the mat"]], lowercase=True).score)
    assert uncased["bleu"] == pytest.approx(100)


# --------------------------------------------------------------------------------------------------------------------
# Loading


def test_metric_names_and_paths() -> None:
    assert set(METRIC_NAMES) == {"cider", "bleu", "vqa_accuracy"}
    for name in METRIC_NAMES:
        assert metric_path(name).is_file()
        assert metric_path(name).is_absolute()


def test_load_metric_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="'rouge'.*bleu, cider, vqa_accuracy"):
        load_metric("rouge")


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json
    from hf_vadapter.metrics import load_metric

    cider = load_metric("cider")
    cider.add_batch(predictions=["a cat on mats"], references=[["a cat on mats"]])
    cider.add_batch(predictions=["the red bus stops"], references=[["the red bus stops"]])
    results = {
        "cider": cider.compute(),
        "bleu": load_metric("bleu").compute(predictions=["a cat on the mat"], references=[["a cat on the mat"]]),
        "vqa_accuracy": load_metric("vqa_accuracy").compute(predictions=["Two."], references=[["2"] * 3 + ["3"] * 7]),
    }
    print(json.dumps(results))
    """
)


def test_metrics_load_offline_in_a_fresh_process_with_an_empty_hf_home(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "XDG_CACHE"))}
    # Any attempt to reach a server would fail through an unreachable proxy.
    unreachable = "http://127.0.0.1:9"
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HTTP_PROXY=unreachable, HTTPS_PROXY=unreachable)
    completed = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["cider"]["cider"] == pytest.approx(10)
    assert results["bleu"]["bleu"] == pytest.approx(100)
    assert results["vqa_accuracy"] == {"accuracy": pytest.approx(0.9)}
    # evaluate copied each script, with the helper it imports relatively, into the fresh modules cache.
    cache = hf_home / "modules" / "evaluate_modules" / "metrics"
    for script, helper in [("cider", "captioning"), ("bleu", "captioning"), ("vqa_accuracy", "vqa_scoring")]:
        (copy,) = (cache / script).glob(f"*/{script}.py")
        assert (copy.parent / f"{helper}.py").read_text() == (metric_path(script).parent / f"{helper}.py").read_text()
