"""The checkpoint's metrics file, found beside it, as a Markdown table for the info panel.

This is the demo's own small formatter: a Space has no hf_vadapter to import one from, and the checkpoint's remote
code holds only modeling and processing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .checkpoint import checkpoint_file, looks_like_repo_id

# Files whose numbers the info panel shows, in this order of preference, each looked for in the checkpoint folder and
# then in its parent (the first found wins): the quickstart's summary and `hf-vadapter evaluate`'s output
# (metrics.json), then the HF Trainer's `save_metrics` files.
METRICS_FILES = ("metrics.json", "eval_results.json", "all_results.json")
MAX_METRIC_ROWS = 40


def _read_dict(path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_metrics(checkpoint: Optional[str]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(file, numbers) from the first `METRICS_FILES` entry in the checkpoint folder or its parent, if any."""
    if not checkpoint:
        return None
    folder = Path(checkpoint)
    if folder.is_dir():
        for name in METRICS_FILES:
            for base in (folder, folder.resolve().parent):
                data = _read_dict(base / name) if (base / name).is_file() else None
                if data is not None:
                    return str(base / name), data
        return None
    if looks_like_repo_id(checkpoint):  # a Hub repo: only files in it (its parent is not a thing)
        for name in METRICS_FILES:
            try:
                path = checkpoint_file(checkpoint, name)
            except Exception:  # noqa: BLE001 - metrics are optional; a failure just hides them
                continue
            data = _read_dict(path) if path else None
            if data is not None:
                return f"{checkpoint}/{name}", data
    return None


def _number(key: str, value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if "accuracy" in key and isinstance(value, float) and 0.0 <= value <= 1.0:
        return f"{100 * value:.1f}%"
    if isinstance(value, int):
        return f"{value:,d}"
    return f"{value:.4g}"


def metrics_markdown(found: Optional[Tuple[str, Dict[str, Any]]]) -> str:
    """A table of the numbers in a metrics file: one column per split when they are nested by split."""
    if not found:
        return "No metrics file found next to the checkpoint (" + ", ".join(f"`{n}`" for n in METRICS_FILES) + ")."
    path, data = found
    data = data["metrics"] if isinstance(data.get("metrics"), dict) else data
    is_number = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)  # noqa: E731
    splits = {key: value for key, value in data.items() if isinstance(value, dict)}
    splits = {key: {k: v for k, v in value.items() if is_number(v)} for key, value in splits.items()}
    splits = {key: value for key, value in splits.items() if value}
    flat = {key: value for key, value in data.items() if is_number(value)}
    lines = [f"Metrics from `{path}`:", ""]
    if splits:
        names = list(splits)
        keys = sorted({key for values in splits.values() for key in values})[:MAX_METRIC_ROWS]
        lines += ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key in keys:
            cells = [_number(key, splits[name][key]) if key in splits[name] else "" for name in names]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    if flat:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_number(key, value)} |" for key, value in sorted(flat.items())[:MAX_METRIC_ROWS]]
    if not splits and not flat:
        lines.append("(no numbers in it)")
    return "\n".join(lines)
