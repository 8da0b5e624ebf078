#!/usr/bin/env bash
# Trainer container entry point: the same logic as the Makefile's `served-models` target.
# For each demo model that has no numeric version under $MODELS yet, export the shipped slim run
# ($SHIPPED/<model>, made by the project's own training; see README "Shipped models") into
# $MODELS/<model>/<n>/. With TRAIN=1 (or without a shipped run) the slim preset is trained into
# $RUNS/<model> first (unless a finished run is already there), as `make models` does.
# Models that are already exported are left alone, so re-running the trainer is cheap.
set -euo pipefail

MODELS="${MODELS:-/models}"
RUNS="${RUNS:-/app/runs/demo}"
SHIPPED="${SHIPPED:-/app/shipped-runs}"
TRAIN="${TRAIN:-0}"
# Every model of the contract registry (common/contract.py) unless told otherwise.
DEMO_MODELS="${DEMO_MODELS:-$(python -c 'from common.contract import MODEL_NAMES; print(*MODEL_NAMES)')}"

for model in $DEMO_MODELS; do
  if compgen -G "${MODELS}/${model}/[0-9]*" >/dev/null; then
    echo "trainer: ${model} already exported in ${MODELS}/${model}, skipping"
    continue
  fi
  if [[ "$TRAIN" != "1" && -f "${SHIPPED}/${model}/manifest.json" ]]; then
    echo "trainer: exporting the shipped ${model} from ${SHIPPED}/${model}"
    python -m export "$model" --run "${SHIPPED}/${model}" --base-path "$MODELS"
    continue
  fi
  run="${RUNS}/${model}"
  # A run without its weights file is an interrupted one: start it again from scratch.
  if [[ ! -f "${run}/model.weights.h5" ]]; then
    rm -rf "$run"
    echo "trainer: no ${model} in ${MODELS}/, training the slim demo model into ${run}"
    python -m training "$model" --preset slim --out "$run"
  fi
  python -m export "$model" --run "$run" --base-path "$MODELS"
done
