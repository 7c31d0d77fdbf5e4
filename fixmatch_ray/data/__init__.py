"""Datasets, the labeled split, per-step sampling and augmentation (per image and batched)."""
