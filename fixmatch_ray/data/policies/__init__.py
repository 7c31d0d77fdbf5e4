"""Augmentation policies: the per-image reference and the batched device path of each."""
