"""The PEFT-style base of every adapter config: a dataclass saved as `vadapter_config.json`.

The file is not named `adapter_config.json`: with peft installed, transformers' Auto classes take any Hub repo holding
that file for a PEFT adapter and redirect to its `base_model_name_or_path` before our code runs.

Each adapter family subclasses `AdapterConfig` with its own fields and a unique `adapter_type`. Besides the family's
hyper-parameters, every config says which tower features the adapter reads (`feature_layers`, `feature_select`,
`feature_norm`) and records the base models it was trained on, the way PEFT records `base_model_name_or_path`.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterable, List, Optional

from .errors import AdapterConfigError, CheckpointError
from .field_types import check_field_types

ADAPTER_CONFIG_NAME = "vadapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
# Bumped when a saved adapter config can no longer be read by an older hf_vadapter.
ADAPTER_FORMAT_VERSION = 1
FEATURE_SELECTIONS = ("patch", "cls", "both")


# The fields that record where the bases came from: a moved or re-downloaded base does not change the adapter.
BASE_NAME_FIELDS = ("vision_model_name_or_path", "vision_revision", "text_model_name_or_path", "text_revision")


def config_differences(saved: Dict[str, Any], own: Dict[str, Any], ignore: Iterable[str] = ()) -> List[str]:
    """`"field: saved vs own"` for each field where two adapter config dicts differ, `ignore`d fields aside."""
    keys = sorted((set(saved) | set(own)) - set(ignore))
    return [f"{key}: {saved.get(key)!r} vs {own.get(key)!r}" for key in keys if saved.get(key) != own.get(key)]


@dataclass
class AdapterConfig:
    """Fields shared by every adapter family.

    Args:
        feature_layers: tower layers to read, as indices into `hidden_states` (0 is the embeddings, -1 the last
            layer). Several layers are read together.
        feature_select: `"patch"` (patch tokens), `"cls"` (the [CLS] token; the mean patch token for towers without
            one, such as SigLIP) or `"both"` ([CLS] first, then the patches).
        feature_norm: apply the tower's own final norm to every layer read, as its last hidden state has.
        vision_model_name_or_path / text_model_name_or_path / *_revision: the frozen bases, recorded on save.
    """

    adapter_type: ClassVar[str] = ""
    # True for families trained in stages whose config can start from the previous stage's checkpoint.
    supports_stage_handoff: ClassVar[bool] = False

    feature_layers: List[int] = field(default_factory=lambda: [-1])
    feature_select: str = "patch"
    feature_norm: bool = False
    vision_model_name_or_path: Optional[str] = None
    vision_revision: Optional[str] = None
    text_model_name_or_path: Optional[str] = None
    text_revision: Optional[str] = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.feature_select not in FEATURE_SELECTIONS:
            raise AdapterConfigError(
                f"feature_select={self.feature_select!r} is not one of {FEATURE_SELECTIONS}."
            )
        if not self.feature_layers:
            raise AdapterConfigError("feature_layers must name at least one tower layer, e.g. [-1].")
        self.feature_layers = [int(layer) for layer in self.feature_layers]

    def to_dict(self) -> Dict[str, Any]:
        return {"adapter_type": self.adapter_type, "format_version": ADAPTER_FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "AdapterConfig":
        """Build from a dict, with clear errors for a newer format or fields this version does not know."""
        values = dict(values)
        values.pop("adapter_type", None)
        version = values.pop("format_version", ADAPTER_FORMAT_VERSION)
        if version > ADAPTER_FORMAT_VERSION:
            raise AdapterConfigError(
                f"This adapter config has format version {version}, but this hf_vadapter reads up to version "
                f"{ADAPTER_FORMAT_VERSION}. It was written by a newer hf_vadapter: upgrade with "
                "`pip install -U hf-vadapter`."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AdapterConfigError(
                f"{cls.__name__} got unknown fields {unknown}. The config may come from a newer hf_vadapter "
                f"(upgrade it) or be misspelt; known fields are {sorted(known)}."
            )
        return cls(**values)

    @classmethod
    def from_previous_stage(cls, checkpoint, **overrides) -> "AdapterConfig":
        """The config of the next training stage, starting from the adapter checkpoint of the previous one (a
        folder or Hub id). Families with `supports_stage_handoff` implement it."""
        raise AdapterConfigError(
            f"{cls.__name__} ({cls.adapter_type}) has no training stages to hand over from {checkpoint!r}."
        )

    def save_pretrained(self, folder) -> None:
        path = Path(folder) / ADAPTER_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @staticmethod
    def read_dict(folder) -> Dict[str, Any]:
        path = Path(folder) / ADAPTER_CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(
                f"{folder} has no {ADAPTER_CONFIG_NAME}. An adapter checkpoint folder holds {ADAPTER_CONFIG_NAME} and "
                f"{ADAPTER_WEIGHTS_NAME}; save one with `model.save_adapter(folder)`."
            )
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path} is not valid JSON ({error}).") from error
