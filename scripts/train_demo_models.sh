#!/usr/bin/env bash
# Reproduces the demo weights shipped in vitlens/assets (CPU, seed 0, the embedded digits set).
# Usage: bash scripts/train_demo_models.sh [OUT_ROOT]   (takes a few minutes on 2 cores)
set -euo pipefail
out_root="${1:-runs/demo}"
assets="$(dirname "$0")/../vitlens/assets"
train() {  # name epochs lr
  vitlens train --model "$1" --dataset digits --epochs "$2" --lr "$3" --seed 0 --device cpu --out "$out_root/$1"
  last="$(printf '%s/%s/epoch_%03d.safetensors' "$out_root" "$1" "$2")"
  cp "$last" "$assets/$1.safetensors"
}
train demo_resnet 30 2e-3
train demo_alternet 30 2e-3
train demo_vit 60 1e-3
