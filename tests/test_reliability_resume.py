"""A real training process killed with SIGKILL between checkpoints, then resumed, ends with the same adapter as an
uninterrupted run."""

import json
import os
import textwrap

from conftest import kill_when_printed
from hf_vadapter.training import run_training
from test_training_helpers import adapter_tensors, arguments, bases, max_abs_diff, run_values  # noqa: F401

KILL_AFTER_STEP = 6  # checkpoint-4 is on disk, checkpoint-8 not yet


def test_run_killed_between_checkpoints_resumes_to_the_same_adapter(bases, tmp_path):
    common = dict(max_steps=10, save_strategy="steps", save_steps=4, num_train_images=4, seed=3)
    reference = adapter_tensors(run_training(*arguments(bases, tmp_path / "straight", **common)).trainer.model)

    values = run_values(bases, tmp_path / "killed", **common)
    (tmp_path / "values.json").write_text(json.dumps(values))
    script = textwrap.dedent(
        f"""
        import json, time
        from transformers import TrainerCallback
        from hf_vadapter.training import parse_arguments, run_training

        class Hang(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == {KILL_AFTER_STEP}:
                    print("KILL ME", flush=True)
                    time.sleep(300)

        values = json.load(open({str(tmp_path / "values.json")!r}))
        run_training(*parse_arguments([], values=values), callbacks=[Hang()])
        """
    )
    kill_when_printed(script, "KILL ME", "training")
    checkpoints = sorted(name for name in os.listdir(tmp_path / "killed") if name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-4"]

    resumed = run_training(*arguments(bases, tmp_path / "killed", **common), resume_from_checkpoint=True)
    assert resumed.trainer.state.global_step == 10
    assert max_abs_diff(adapter_tensors(resumed.trainer.model), reference) <= 1e-6
