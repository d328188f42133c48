"""The benchmarks' summaries over seeds: what they conclude follows the numbers they are given."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import binding_sweep  # noqa: E402
import paper_claims  # noqa: E402


def _record(arm, seed, final_loss, accuracy):
    return {"arm": arm, "seed": seed, "steps": 100, "stage1_steps": 100, "val_steps": [0, 50, 100],
            "val_loss": [8.0, final_loss + 1.0, final_loss], "step_time": 1.0, "test": accuracy,
            "test_heldout": accuracy}


def _claim_c_records(one_layer_losses, six_layer_losses):
    records = []
    for seed, (one, six) in enumerate(zip(one_layer_losses, six_layer_losses)):
        records += [_record("palm2_stage1", seed, one, 30.0), _record("palm2_stage1_6layer", seed, six, 30.0)]
    return records


def _claim_c_lines(markdown):
    start = markdown.index("**Claim c")
    return markdown[start:]


def test_a_consistent_paired_difference_holds_and_its_opposite_is_reversed():
    holds = _claim_c_lines(paper_claims.seeds_table(_claim_c_records([1.0, 1.5, 2.0], [1.2, 1.7, 2.3])))
    assert "1-layer vs 6-layer resampler: final validation loss: -0.233 +- 0.033 over 3 seeds (holds)" in holds
    reversed_ = _claim_c_lines(paper_claims.seeds_table(_claim_c_records([1.2, 1.7, 2.3], [1.0, 1.5, 2.0])))
    assert "(reversed)" in reversed_ and "**Not reproduced**" in reversed_


def test_a_difference_within_two_standard_errors_is_undecided():
    markdown = _claim_c_lines(paper_claims.seeds_table(_claim_c_records([1.0, 2.0, 1.0], [1.5, 1.0, 1.4])))
    assert "final validation loss: +0.033 +- 0.484 over 3 seeds (undecided)" in markdown
    # Equal accuracies on every seed: no difference, so the VQA check cannot hold either.
    assert "VQA exact match: +0.000 +- 0.000 over 3 seeds (undecided)" in markdown


def test_claims_whose_arms_were_not_run_are_left_out():
    markdown = paper_claims.seeds_table(_claim_c_records([1.0, 1.5], [1.2, 1.7]))
    assert "**Claim c" in markdown and "**Claim a" not in markdown and "**Claim b" not in markdown


def test_binding_sweep_seed_summary_gives_mean_and_standard_error_per_arm():
    def result(arm, seed, colour):
        scores = {kind: colour for kind in ("color", "shape", "count", "yes_no", "position")}
        return {"arm": arm, "seed": seed, "steps": 600, "test": scores, "test_heldout": scores}

    lines = binding_sweep.seed_summary([result("base", 0, 0.4), result("base", 1, 0.6), result("slots2", 0, 0.5)])
    assert lines[2] == "| base | 600 | 0 1 | 50.0 +- 10.0 | 50.0 +- 10.0 | 50.0 +- 10.0 | 50.0 +- 10.0 |"
    assert len(lines) == 3  # slots2 ran on one seed only: no row


def _row(image, kind, prediction, target):
    return {"image_id": image, "task": "caption" if kind == "caption" else "vqa", "question_type": kind,
            "prediction": prediction, "target": target}


def test_answer_errors_tell_a_wrong_binding_from_an_unread_attribute():
    import caption_binding

    rows = [
        _row("a", "caption", "", "a small red circle at the top and a large blue star on the left."),
        _row("a", "color", "blue", "red"),  # the star's colour given for the circle: bound to the wrong object
        _row("a", "shape", "square.", "circle"),  # no square in the scene: not read
        _row("b", "caption", "", "a large green triangle in the center."),
        _row("b", "color", "Green", "green"),
    ]
    errors = caption_binding.answer_errors(rows)
    assert errors[("color", 2)] == {"answers": 1, "right": 0.0, "other object": 1.0, "absent": 0.0}
    assert errors[("shape", 2)] == {"answers": 1, "right": 0.0, "other object": 0.0, "absent": 1.0}
    assert errors[("color", 1)]["right"] == 1.0
    assert ("shape", 1) not in errors


def test_binding_sweep_arms_name_their_family_and_training_levers():
    from hf_vadapter import EPALMConfig, LlamaAdapterV2Config, MLPProjectorConfig, PerceiverResamplerConfig

    assert isinstance(binding_sweep.arm_config("llama", None, []), LlamaAdapterV2Config)
    assert isinstance(binding_sweep.arm_config("epalm", None, []), EPALMConfig)
    assert isinstance(binding_sweep.arm_config("perceiver", None, []), PerceiverResamplerConfig)
    training_only = binding_sweep.arm_config("slots2_lr6e-3_first", None, [])  # lr and placement: not the config
    assert isinstance(training_only, MLPProjectorConfig) and training_only.tokens_per_cell == 2
    assert training_only.num_focus_tokens == 0
    assert binding_sweep.arm_config("base_focus2_lr6e-3", None, []).num_focus_tokens == 2
    try:
        binding_sweep.arm_config("slot2", None, [])
    except SystemExit as error:
        assert "slot2" in str(error)
    else:
        raise AssertionError("an unknown arm must stop the sweep")


def test_describe_then_answer_puts_each_images_caption_before_its_questions():
    import describe_then_answer

    rows = [
        {"task": "caption", "image_id": "a", "image": None, "prompt": "Describe the image."},
        {"task": "vqa", "image_id": "a", "image": None, "prompt": "What color is the star?"},
        {"task": "vqa", "image_id": "b", "image": None, "prompt": "How many shapes are there?"},
    ]
    captions = {"a": "a small red star at the top.", "b": "a large blue circle."}
    asked = describe_then_answer.contextual_rows(rows, captions)
    assert [row["prompt"] for row in asked] == [
        "Context: a small red star at the top.\nWhat color is the star?",
        "Context: a large blue circle.\nHow many shapes are there?",
    ]
    assert rows[1]["prompt"] == "What color is the star?"  # the data set's rows stay as they were
