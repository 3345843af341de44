"""Baseline for BENCHMARKS.md: the default encoder at random initialisation, evaluated
exactly like the default run's final encoder (same features, k-NN and linear probe).

    .venv/bin/python benchmarks/random_init.py [--arch narrow_resnet] [--seed 0]
"""
import argparse

import torch

from byol import create_encoder
from byol.data import load_dataset
from byol.evaluate import extract_features, knn_accuracy, linear_probe

parser = argparse.ArgumentParser()
parser.add_argument("--arch", default="narrow_resnet")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

torch.manual_seed(args.seed)
dataset = load_dataset()
mean, std = dataset.channel_stats()
encoder = create_encoder(args.arch, in_channels=1, image_size=28).to(memory_format=torch.channels_last)
train = extract_features(encoder, dataset.train, mean, std)
test = extract_features(encoder, dataset.test, mean, std)
knn = knn_accuracy(train, dataset.train.labels, test, dataset.test.labels, 10)
probe = linear_probe(train, dataset.train.labels, test, dataset.test.labels, 10)
print(f"{args.arch} random init (seed {args.seed}): k-NN {100 * knn:.2f} %, linear {100 * probe.accuracy:.2f} % "
      f"(L2 {probe.weight_decay:g})")
