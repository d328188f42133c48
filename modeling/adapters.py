"""The registry of adapter families: `adapter_type` -> (config dataclass, module class).

The five built-in families are listed here. A new family can live in its own file and join with
`register_adapter(MyConfig, MyAdapter)` (docs/adding_an_adapter.md). Its code travels with its checkpoints: the saved
config names the family's file (`CODE_KEY`), `VisionAdapterConfig.save_pretrained` copies that file next to the
remote code, and loading with `trust_remote_code=True` imports it from there, so the checkpoint loads where neither
hf_vadapter nor the family's package is installed. Such a file keeps to the remote-code rules: it imports its
siblings relatively (`from .adapter_base import VisionAdapter`), with the package import as an ImportError fallback
for use inside hf_vadapter.
"""

import contextlib
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Type, Union

from .adapter_base import VisionAdapter
from .adapter_config import AdapterConfig
from .errors import AdapterConfigError
from .epalm import EPALM, EPALMConfig
from .llama_adapter_v2 import LlamaAdapterV2, LlamaAdapterV2Config
from .mlp_projector import MLPProjector, MLPProjectorConfig
from .palm2_vadapter import PaLM2VAdapter, PaLM2VAdapterConfig
from .perceiver_resampler import PerceiverResampler, PerceiverResamplerConfig
from .vision_features import VisionGeometry

ADAPTER_REGISTRY: Dict[str, Tuple[Type[AdapterConfig], Type[VisionAdapter]]] = {
    config_class.adapter_type: (config_class, module_class)
    for config_class, module_class in (
        (MLPProjectorConfig, MLPProjector),
        (PerceiverResamplerConfig, PerceiverResampler),
        (PaLM2VAdapterConfig, PaLM2VAdapter),
        (EPALMConfig, EPALM),
        (LlamaAdapterV2Config, LlamaAdapterV2),
    )
}


BUILTIN_ADAPTER_TYPES = frozenset(ADAPTER_REGISTRY)
# In a saved adapter config dict of a registered family: "<file stem>.<config class>.<module class>".
CODE_KEY = "code"
# Where the checkpoints being loaded live, innermost last: (folder or Hub id, revision), so that a registered
# family's file is found there.
_code_sources: list = []


def register_adapter(config_class: Type[AdapterConfig], module_class: Type[VisionAdapter]) -> None:
    """Add an adapter family: `config_class` (an `AdapterConfig` subclass with a unique `adapter_type`) and
    `module_class` (a `VisionAdapter` subclass), both defined in one file that is saved with every checkpoint."""
    adapter_type = getattr(config_class, "adapter_type", "")
    if not adapter_type or not hasattr(config_class, "from_dict"):
        raise AdapterConfigError(f"{config_class.__name__} needs a non-empty class attribute adapter_type.")
    if adapter_type in BUILTIN_ADAPTER_TYPES:
        raise AdapterConfigError(f"adapter_type {adapter_type!r} is a built-in family; pick another name.")
    if not hasattr(module_class, "embed_images"):  # a VisionAdapter (possibly of a remote-code copy of this file)
        raise AdapterConfigError(f"{module_class.__name__} must subclass VisionAdapter (modeling/adapter_base.py).")
    if config_class.__module__ != module_class.__module__:
        raise AdapterConfigError(
            f"{config_class.__name__} and {module_class.__name__} must be defined in one file: that file is what "
            "travels with the checkpoint."
        )
    ADAPTER_REGISTRY[adapter_type] = (config_class, module_class)
    config_class.registered_module_class = module_class  # for `build_adapter` in another copy of the remote code


def family_code_file(adapter_type: str) -> Optional[Path]:
    """The file of a registered (not built-in) family, which checkpoints carry; None for built-in families."""
    if adapter_type in BUILTIN_ADAPTER_TYPES or adapter_type not in ADAPTER_REGISTRY:
        return None
    return Path(sys.modules[ADAPTER_REGISTRY[adapter_type][0].__module__].__file__)


def adapter_config_to_dict(config: AdapterConfig) -> Dict[str, Any]:
    """`config.to_dict()`, plus where a registered family's code lies (see the module docstring)."""
    values = config.to_dict()
    code_file = family_code_file(config.adapter_type)
    if code_file is not None:
        config_class, module_class = ADAPTER_REGISTRY[config.adapter_type]
        values[CODE_KEY] = f"{code_file.stem}.{config_class.__name__}.{module_class.__name__}"
    return values


@contextlib.contextmanager
def loading_code_from(name_or_path, revision: Optional[str] = None) -> Iterator[None]:
    """Registered families named by configs read inside this block are imported from `name_or_path`."""
    _code_sources.append((str(name_or_path), revision))
    try:
        yield
    finally:
        _code_sources.pop()


def _import_family(adapter_type: str, code: str) -> None:
    """Import a registered family's file from the checkpoint being loaded, and register it here."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    if not _code_sources:
        return
    module, config_name, module_name = code.split(".")
    name_or_path, revision = _code_sources[-1]
    config_class = get_class_from_dynamic_module(f"{module}.{config_name}", name_or_path, revision=revision)
    module_class = get_class_from_dynamic_module(f"{module}.{module_name}", name_or_path, revision=revision)
    if config_class.adapter_type == adapter_type:
        register_adapter(config_class, module_class)


def adapter_config_from_dict(values: Union[Dict[str, Any], AdapterConfig]) -> AdapterConfig:
    """Turn a saved adapter config dict (with its `adapter_type`) back into its dataclass."""
    if not isinstance(values, dict):  # already a config (possibly of a registered family's own copy of this code)
        return values
    adapter_type = values.get("adapter_type")
    if adapter_type not in ADAPTER_REGISTRY and values.get(CODE_KEY):
        _import_family(adapter_type, values[CODE_KEY])
    if adapter_type not in ADAPTER_REGISTRY:
        raise AdapterConfigError(
            f"Unknown adapter_type {adapter_type!r}. This hf_vadapter knows {sorted(ADAPTER_REGISTRY)}; a newer "
            "hf_vadapter may know more."
        )
    values = {key: value for key, value in values.items() if key != CODE_KEY}
    return ADAPTER_REGISTRY[adapter_type][0].from_dict(values)


def build_adapter(config: AdapterConfig, geometry: VisionGeometry, text_config) -> VisionAdapter:
    """Instantiate the module of `config`'s family."""
    for layer in config.feature_layers:
        if not -(geometry.num_layers + 1) <= layer <= geometry.num_layers:
            raise AdapterConfigError(
                f"feature_layers holds {layer}, but the tower has {geometry.num_layers} layers "
                f"(valid indices are {-(geometry.num_layers + 1)}..{geometry.num_layers})."
            )
    if config.adapter_type not in ADAPTER_REGISTRY and hasattr(type(config), "registered_module_class"):
        # transformers may load the config and the model classes from two copies of the remote code: the config's
        # copy registered the family, this one learns it from the config.
        register_adapter(type(config), type(config).registered_module_class)
    return ADAPTER_REGISTRY[config.adapter_type][1](config, geometry, text_config)
