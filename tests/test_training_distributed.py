"""Two processes under `accelerate launch` (gloo on CPU) train the same adapter as one process with the same
global batch. No distributed code of our own: the Trainer and accelerate do the work."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from test_training_helpers import adapter_file, bases, max_abs_diff, run_values  # noqa: F401

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from hf_vadapter.training import parse_arguments, run_training
    run_training(*parse_arguments(sys.argv[2:], values=json.load(open(sys.argv[1]))))
    """
)


def _launch(prefix, values, tmp_path, name, extra=()):
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(values))
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [*prefix, str(script), str(config), *extra], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(bases, tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    # Sequential sampling: both runs see the rows in the same order, so only the data-parallel arithmetic differs.
    shared = dict(max_steps=4, train_sampling_strategy="sequential", learning_rate=1e-2, save_strategy="no")
    single = run_values(bases, tmp_path / "one", per_device_train_batch_size=4, **shared)
    double = run_values(bases, tmp_path / "two", per_device_train_batch_size=2, **shared)
    _launch([sys.executable], single, tmp_path, "one")
    # `--multi_gpu` picks accelerate's torchrun launcher; with use_cpu=True the processes join over gloo.
    launched = _launch([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no"], double, tmp_path, "two")  # fmt: skip
    state = json.loads((tmp_path / "two" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["train_batch_size"] == 2
    diff = max_abs_diff(adapter_file(tmp_path / "one"), adapter_file(tmp_path / "two"))
    print(f"2 processes vs 1 process, max abs diff of the adapter: {diff:.3e}")
    assert diff < 1e-5, launched.stderr[-2000:]
