"""Which labelled images an evaluation may use: stratified, seeded splits of the training
labels (the paper's 1 % / 10 % subsets, and validation splits inside them), each role drawn
from its own generator."""
from __future__ import annotations

import hashlib

import torch


def role_seed(seed: int, role: str) -> int:
    """The generator seed of one use (``role``: test, subset, validation, ...) of seed ``seed``:
    a hash, so no seed's test split is another seed's label subset."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{role}".encode(), digest_size=7).digest(), "little")


def stratified_split(labels: torch.Tensor, fraction: float, seed: int,
                     minimum: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out) with ``fraction`` of every class held out (at least
    ``minimum``, and never a whole class of two or more), reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    held_out = []
    labels = labels.cpu()
    for value in labels.unique():
        members = (labels == value).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        count = max(minimum, int(round(fraction * len(members))))
        held_out.append(members[: min(count, max(1, len(members) - 1))])
    held_out = torch.cat(held_out).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return mask.nonzero().squeeze(1), held_out


def label_split(labels: torch.Tensor, label_fraction: float = 1.0, val_fraction: float = 0.1,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Which labelled images an evaluation may use: indices (fit, val), disjoint.

    ``label_fraction`` of every class is drawn first (the paper's 1 % / 10 % subsets;
    at least two images per class), then ``val_fraction`` of that subset, again per
    class, is held out for choosing the probe's L2 or the fine-tuning epoch.  The test
    split is never touched.  Reproducible from ``seed``."""
    pool = torch.arange(len(labels))
    if label_fraction < 1:
        pool = stratified_split(labels, label_fraction, role_seed(seed, "subset"), minimum=2)[1]
    fit, val = stratified_split(labels.cpu()[pool], val_fraction, role_seed(seed, "validation"))
    return pool[fit], pool[val]


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``folds`` (fit, val) index pairs: every image in exactly one val part, each class spread
    evenly over the parts; reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    part = torch.empty(len(labels), dtype=torch.long)
    for value in labels.unique():
        members = (labels == value).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        part[members] = (torch.arange(len(members)) + int(value)) % folds  # offset: small classes fill all parts
    everything = torch.arange(len(labels))
    return [(everything[part != k], everything[part == k]) for k in range(folds)]
