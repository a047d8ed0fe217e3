#!/usr/bin/env bash
# Evidence for "advice a user can trust" (RESULTS.md, "Trust"): the README's Fashion-MNIST
# example under-trained (it does not learn) against --epochs auto at a width a CPU can train,
# and the CIFAR-stem ResNet-18 at 32 px under-trained against settled. Every run writes its
# report (analysis.json) under OUT; the terminal summaries go to stdout.
# Usage: bash benchmarks/trust_evidence.sh ROOT [OUT]   (ROOT: a torchvision root holding
# FashionMNIST/raw, e.g. the decompressed ../shared/data files; see ../shared/data/README.md)
set -euo pipefail
ROOT=${1:?a torchvision root with FashionMNIST}
OUT=${2:-benchmarks/results/trust}
SA=${SA:-.venv/bin/satadvisor}
analyze() {
  local name=$1; shift
  local start=$SECONDS
  echo "=== $name: satadvisor analyze $*"
  "$SA" analyze "$@" --data-dir "$ROOT" --dataset fashion-mnist --device cpu --out "$OUT" \
    --name "$name" || echo "exit $?"
  echo "=== $name: $((SECONDS - start)) s"
}
# 1. the README's example exactly as the issue ran it (VGG16, width 64, 2 epochs on 2,000 images)
analyze vgg16-2ep examples/vgg16_fashion.py --subset 2000 --epochs 2
# 2. the same network, learnable on a CPU: width 16, until learned and settled
analyze vgg16-w16-auto examples/vgg16_fashion.py --subset 2000 --epochs auto --max-epochs 20 \
  --set width=16
# 3. the CIFAR-stem ResNet-18 at 32 px (width 16 for the CPU): one epoch against auto
analyze resnet18c-1ep resnet18_cifar --resolution 32 --subset 2000 --epochs 1 --set width=16
analyze resnet18c-auto resnet18_cifar --resolution 32 --subset 2000 --epochs auto \
  --max-epochs 20 --set width=16
