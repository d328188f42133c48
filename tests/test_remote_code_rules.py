"""The `modeling/` bundle is copied flat next to every checkpoint and run with trust_remote_code. Enforce its rules:

- imports: the standard library, torch, transformers (and safetensors and Pillow, which transformers' own weights and
  image stack bring), plus siblings only in the `from .x import y` form that the transformers copier follows;
- import time executes nothing but definitions: no top-level calls beyond a logger, a lock and pure literals.
"""

import ast
import sys
from pathlib import Path

import pytest

MODELING = Path(__file__).resolve().parents[1] / "modeling"
FILES = sorted(p for p in MODELING.glob("*.py") if p.name != "__init__.py")
ALLOWED_ROOTS = {"torch", "transformers", "safetensors", "PIL"}
ALLOWED_TOP_LEVEL_CALLS = {"logging.get_logger", "threading.Lock"}  # a lock only allocates
PURE_BUILTINS = {"frozenset", "tuple", "sorted", "dict", "set", "len"}


def _call_name(call: ast.Call) -> str:
    return ast.unparse(call.func)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_imports_are_siblings_or_allowed_packages(path):
    siblings = {p.stem for p in MODELING.glob("*.py")}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                assert root in ALLOWED_ROOTS or root in sys.stdlib_module_names, f"{path.name}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module, f"{path.name}: only `from .x import y` is copied"
                assert node.module in siblings and "." not in node.module, f"{path.name}: from .{node.module}"
            else:
                root = node.module.split(".")[0]
                assert root in ALLOWED_ROOTS or root in sys.stdlib_module_names, f"{path.name}: from {node.module}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_import_executes_only_definitions(path):
    tree = ast.parse(path.read_text())
    # Constant tables built from the file's own (data)classes are definitions too.
    local_classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    allowed = ALLOWED_TOP_LEVEL_CALLS | local_classes | PURE_BUILTINS
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}"
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                assert _call_name(sub) in allowed, (
                    f"{path.name}:{node.lineno}: top-level call {_call_name(sub)}"
                )


def test_every_bundle_file_is_reachable_from_the_model_or_processor_file():
    """The copier follows relative imports from the saved object's file: modeling_vadapter.py when the model is saved,
    processing_vadapter.py when the processor is. Every bundle file must be reached, and the model must not need the
    processor (construction runs model config -> processor only)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    from_model = {Path(p).name for p in get_relative_import_files(str(MODELING / "modeling_vadapter.py"))}
    from_processor = {Path(p).name for p in get_relative_import_files(str(MODELING / "processing_vadapter.py"))}
    assert "processing_vadapter.py" not in from_model
    assert {p.name for p in FILES} <= from_model | from_processor | {"modeling_vadapter.py", "processing_vadapter.py"}
