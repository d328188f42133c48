"""A real training process killed with SIGKILL between checkpoints, then resumed, ends with the same adapter as an
uninterrupted run; one sent SIGTERM during its final save leaves a whole checkpoint."""

import json
import os
import signal
import textwrap

from conftest import kill_when_printed
from hf_vadapter import VisionAdapterForCausalLM
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


def test_sigterm_during_the_final_save_leaves_a_loadable_checkpoint(bases, tmp_path):
    """A real run is sent SIGTERM while its final save renames the new adapter over an older one in output_dir:
    the folder then holds one whole checkpoint (the new one: the save finishes, then the run exits as asked)."""
    common = dict(max_steps=2, num_train_images=2, seed=3)
    old = adapter_tensors(run_training(*arguments(bases, tmp_path / "run", **common)).trainer.model)
    values = run_values(bases, tmp_path / "run", adapter_config={"num_layers": 2}, **common)
    (tmp_path / "values.json").write_text(json.dumps(values))
    script = textwrap.dedent(
        f"""
        import json, os, time
        from hf_vadapter.training import parse_arguments, run_training

        real_replace = os.replace
        def slow_replace(src, dst):
            real_replace(src, dst)
            if str(dst) == {str(tmp_path / "run" / "adapter_model.safetensors")!r}:
                print("RENAMED", flush=True)
                time.sleep(5)  # SIGTERM arrives here: the new weights are in place, the other files not yet
        os.replace = slow_replace

        values = json.load(open({str(tmp_path / "values.json")!r}))
        run_training(*parse_arguments([], values=values))
        """
    )
    status = kill_when_printed(script, "RENAMED", "training", sig=signal.SIGTERM)
    assert status == -signal.SIGTERM
    model = VisionAdapterForCausalLM.from_pretrained(tmp_path / "run")
    loaded = adapter_tensors(model)
    assert len(loaded) != len(old)  # the new two-layer adapter, whole
    assert not [name for name in os.listdir(tmp_path / "run") if name.startswith(".vadapter-tmp-")]
