"""Checking a config dataclass's values against its field annotations, so a wrong type fails at load time.

JSON configs are edited by hand: `"feature_norm": "no"` is a truthy string, `"pool_size": "2"` a string that fails
much later. Every field is checked against its annotation (bool, int, float, str, Optional, List, Dict, Any).
"""

import dataclasses
import numbers
import typing
from typing import Any

from .errors import AdapterConfigError


def matches(value: Any, annotation: Any) -> bool:
    """Whether `value` fits `annotation`; ints are not bools, floats accept ints, lists accept tuples."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return any(matches(value, arg) for arg in args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and (not args or all(matches(item, args[0]) for item in value))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, annotation)


def describe(annotation: Any) -> str:
    """`Optional[List[int]]` -> 'a list of int, or None'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return ", or ".join(describe(arg) for arg in args)
    if origin in (list, tuple):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin is dict:
        return "a dict"
    return getattr(annotation, "__name__", str(annotation))


def check_field_types(config: Any) -> None:
    """Raise `AdapterConfigError` naming the first field of dataclass `config` whose value has the wrong type."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, annotation = getattr(config, field.name), hints[field.name]
        if not matches(value, annotation):
            raise AdapterConfigError(
                f"{type(config).__name__}.{field.name} must be {describe(annotation)}, got {value!r} "
                f"({type(value).__name__}). Fix the value in the config (in JSON: true/false for booleans, numbers "
                "without quotes)."
            )
