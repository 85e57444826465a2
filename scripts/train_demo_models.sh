#!/usr/bin/env bash
# Reproduces the demo weights shipped in vitlens/assets (CPU, seed 0, the embedded digits set).
# Usage: bash scripts/train_demo_models.sh [OUT_ROOT]   (takes a few minutes on 2 cores)
set -euo pipefail
out_root="${1:-runs/demo}"
assets="$(dirname "$0")/../vitlens/assets"
train() {  # name epochs lr [epoch to ship: default the last; the run stops there]
  keep="${4:-$2}"
  if [ "$keep" = "$2" ]; then
    vitlens train --model "$1" --dataset digits --epochs "$2" --lr "$3" --seed 0 --device cpu --out "$out_root/$1"
  else  # the same run (its cosine schedule spans all epochs), stopped once epoch $keep is written
    vitlens train --model "$1" --dataset digits --epochs "$2" --lr "$3" --seed 0 --device cpu --out "$out_root/$1" &
    pid=$!
    while [ ! -f "$(printf '%s/%s/epoch_%03d.safetensors' "$out_root" "$1" "$keep")" ] && kill -0 "$pid" 2>/dev/null; do
      sleep 5
    done
    sleep 5  # let the epoch's file be written out
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  last="$(printf '%s/%s/epoch_%03d.safetensors' "$out_root" "$1" "$keep")"
  cp "$last" "$assets/$1.safetensors"
}
train demo_resnet 30 2e-3
train demo_alternet 30 2e-3
train demo_vit 60 1e-3
train demo_resnet_deep 30 2e-3 19
train demo_vit_deep 50 1e-3
