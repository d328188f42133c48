#!/usr/bin/env bash
# Set up and run the main job: convert the packaged backbones, build the data, train the default adapter,
# evaluate it, save an adapter-only checkpoint and show what it says. Extra flags go to `hf-vadapter quickstart`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh" default
cd "$ROOT"
hf-vadapter quickstart "$@"
