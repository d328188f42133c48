"""Progressive stages: several training runs in a row, each able to start from the previous one's output.

A stage config is a YAML/JSON file with shared arguments at the top and a `stages` list; each stage's mapping
overrides the shared values. Any string `"{previous}"` in a stage is replaced by the previous stage's output folder,
which is how a stage hands over:

    vision_model_name_or_path: google/siglip-base-patch16-224
    output_dir: runs/palm2                    # stages go to runs/palm2/<name> unless they set output_dir
    stages:
      - name: stage1                          # PaLM2-VAdapter stage 1: tiny LM as the caption decoder
        text_model_name_or_path: HuggingFaceTB/SmolLM2-135M
        adapter_type: palm2_vadapter
        adapter_config: {stage: 1}
      - name: stage2                          # stage 2: the large LM, tiny LM taken from stage 1
        text_model_name_or_path: Qwen/Qwen2.5-1.5B
        adapter_type: palm2_vadapter
        adapter_config: {stage1_name_or_path: "{previous}"}

Any adapter can continue from a previous stage with `init_adapter_from: "{previous}"` (every adapter tensor whose
name and shape match is loaded).
"""

import os
from typing import Any, Dict, List, Optional, Sequence

from .arguments import parse_arguments
from .run import TrainingRun, run_training

PREVIOUS = "{previous}"


def _substitute(value: Any, previous: Optional[str], stage: str) -> Any:
    if isinstance(value, str) and PREVIOUS in value:
        if previous is None:
            raise ValueError(f"Stage {stage!r} refers to {PREVIOUS}, but it is the first stage.")
        return value.replace(PREVIOUS, previous)
    if isinstance(value, dict):
        return {key: _substitute(item, previous, stage) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, previous, stage) for item in value]
    return value


def stage_values(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The argument values of each stage (shared values overridden by the stage's), before `{previous}` is filled."""
    stages = config.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError("A stage config needs a non-empty `stages` list of argument mappings.")
    shared = {key: value for key, value in config.items() if key != "stages"}
    root = shared.get("output_dir", "runs")
    out = []
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ValueError(f"Stage {index} must be a mapping of arguments, got {type(stage).__name__}.")
        values = {**shared, **stage}
        name = str(values.pop("name", f"stage{index + 1}"))
        if "output_dir" not in stage:
            values["output_dir"] = os.path.join(root, name)
        out.append({"name": name, **values})
    return out


def run_stages(config: Dict[str, Any], argv: Sequence[str] = ()) -> List[TrainingRun]:
    """Train every stage of `config` in order; `argv` flags override every stage's values."""
    runs: List[TrainingRun] = []
    previous: Optional[str] = None
    for values in stage_values(config):
        name = values.pop("name")
        values = _substitute(values, previous, name)
        runs.append(run_training(*parse_arguments(list(argv), values=values)))
        previous = runs[-1].output_dir
    return runs
