#!/usr/bin/env bash
# Runs inside the new environment, from the directory Snakemake runs in (the repository root).
set -euo pipefail
python -m pip install --no-deps -e .
