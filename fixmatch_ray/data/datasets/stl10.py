"""STL-10 through torchvision's ``STL10`` (the binary files of ``stl10_binary.tar.gz``).

Splits: ``train`` 5,000 labeled images, ``unlabeled`` 100,000 (targets −1, as torchvision gives
them), ``test`` 8,000, and ``train+unlabeled``, the 105,000 images the official ``stl10`` trains
on (``create_unlabeled.py stl10-train stl10-unlabeled``): the unlabeled set, whose first 5,000
images are ``train``, so the labeled pool indexes into it unchanged.

The labeled pool is the dataset's own fold (``fold_indices.txt``: 10 lines of 1,000 indices into
``train``, 0-based). The official ``create_split.py --seed=k --size=1000`` takes line ``k``
counting from 0 (``data.split('\\n')[seed]``), as torchvision's ``folds=k`` does; the official runs
use seeds 1..5 (README: ``stl10.${seed}@1000``), i.e. the 2nd to 6th lines.

Spec facts (google-research/fixmatch): 96×96 RGB, 10 classes; weak augmentation = flip + reflect
pad 12 + crop (``libml/augment.py``: ``stl10=Primitives.ms(12)``); RandAugment's Cutout stays
16 px (``cutout_numpy``'s default size), CTAugment's cutout scales with the image
(``1 + int(level · 96 · 0.499)`` = 48 at level 1). Network: the paper says "WRN-37-2 (23.8M
parameters)". ``fixmatch.py`` sets ``scales = FLAGS.scales or ilog2(width) − 2`` with
``ilog2 = ceil(log2)``: without a ``--scales`` flag that is 5 scales at 96 px (filters 32..512,
4 blocks each, 23.77M parameters, the paper's count); 4 scales (5.93M) give the 37 weight layers
of the name. No published command says which flag the runs used (google-research/fixmatch #34).
The spec follows the official code: ``wideresnet`` depth 46 (1 + 5·(2·4 + 1) weight layers), width 2,
5 scales (``models.wideresnet``).

Registered as ``stl10``: ``num_labeled`` must be 1000 (a fold) and the seed 0..9 (a fold line); a
fold line of another length is a one-line DataError. Mean/std: the per-channel figures published
for STL-10 (0.4467, 0.4398, 0.4066) / (0.2603, 0.2566, 0.2713), widely used in PyTorch code; they
cannot be recomputed offline here (``svhn.channel_mean_std`` does it from the real files). The
official code does not whiten (see ``svhn``), so they only fix the scale of the input.

Memory of the batched path's resident crop store (:class:`fixmatch_ray.data.batched.CropStore`) for the 105,000
training images: 105,000 × 96 × 96 × 3 = 2,903,040,000 bytes (2.70 GiB) as they are; tabulated,
its 2·(2·12+1) = 50 column variants would take 145,152,000,000 bytes (135.2 GiB). The 6 GiB limit
keeps the untabulated store (2.70 GiB; crops gather columns).
"""
from __future__ import annotations

import os

import numpy as np

from ...errors import DataError
from .base import DatasetSpec, ImageData
from .torchvision_io import join_chw, open_dataset

FOLDER = "stl10_binary"
SPLIT_FILES = {
    "train": ["train_X.bin", "train_y.bin"],
    "unlabeled": ["unlabeled_X.bin"],
    "test": ["test_X.bin", "test_y.bin"],
}
SPLIT_FILES["train+unlabeled"] = SPLIT_FILES["train"] + SPLIT_FILES["unlabeled"]
FOLD_FILE = "fold_indices.txt"
NUM_FOLDS = 10
FOLD_SIZE = 1000


def load_stl10(root: str | os.PathLike, split: str = "train", download: bool = True) -> ImageData:
    """STL-10's ``train``, ``unlabeled``, ``train+unlabeled`` or ``test`` images, uint8
    ``(N, 96, 96, 3)``; targets 0..9, −1 for the unlabeled images.

    ``train+unlabeled`` is filled part by part into one array: the peak is the parts as
    torchvision reads them (0.14 + 2.76 GB) plus the result (2.90 GB), without torchvision's own
    concatenated copy on top.
    """
    if split not in SPLIT_FILES:
        raise DataError(f"stl10 split must be one of {', '.join(SPLIT_FILES)}, got {split!r}")
    root = os.fspath(root)
    parts = ["train", "unlabeled"] if split == "train+unlabeled" else [split]
    return join_chw([_load_part(root, p, SPLIT_FILES[split], download) for p in parts])


def _load_part(root: str, part: str, files: list[str], download: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split through torchvision: images (N, 3, 96, 96), targets (−1 where unlabeled)."""
    from torchvision import datasets

    class Present(datasets.STL10):
        # torchvision hashes all five files (2.6 GB) at each load and wants them all even for
        # the test set; the files this split reads being there is what matters. The archive's
        # md5 is still checked when it is downloaded.
        def _check_integrity(self) -> bool:
            return all(os.path.isfile(os.path.join(self.root, FOLDER, f)) for f in SPLIT_FILES[self.split])

    where = os.path.join(root, FOLDER)
    ds = open_dataset(
        lambda dl: Present(root, split=part, download=dl), root, "stl10", download,
        missing=f"stl10 not found: expected {', '.join(files)} in {where} (the extracted "
                f"'{FOLDER}' folder of {datasets.STL10.filename}; or run with download on)",
        failed=f"stl10 not found at {where} and the download failed ({{reason}}); put the "
               f"extracted '{FOLDER}' folder of {datasets.STL10.filename} there")
    return ds.data, np.asarray(ds.labels, dtype=np.int64)


def stl10_fold(root: str | os.PathLike, seed: int) -> np.ndarray:
    """The labeled pool of run ``seed``: line ``seed`` (from 0) of ``fold_indices.txt``, sorted
    indices into ``train`` (and into ``train+unlabeled``, whose first images are ``train``)."""
    if not 0 <= seed < NUM_FOLDS:
        raise ValueError(f"stl10 has {NUM_FOLDS} folds: seed picks one, so it must be 0..{NUM_FOLDS - 1} "
                         f"(the official runs use 1..5), got {seed}")
    path = os.path.join(os.fspath(root), FOLDER, FOLD_FILE)
    if not os.path.isfile(path):
        raise DataError(f"stl10 folds not found: expected {FOLD_FILE} in {os.path.dirname(path)} "
                        f"(the extracted '{FOLDER}' folder of stl10_binary.tar.gz)")
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) <= seed or not lines[seed].split():
        raise DataError(f"{path} has no fold {seed}: expected {NUM_FOLDS} lines of indices")
    return np.sort(np.array(lines[seed].split(), dtype=np.int64))


# -- the registry's spec ------------------------------------------------------------------------
def check_labels(n: int) -> str | None:
    """Why ``n`` labels cannot be a labeled set of STL-10 (only its folds of 1,000 are), or None."""
    if n != FOLD_SIZE:
        return (f"stl10's labeled sets are its own folds of {FOLD_SIZE} train images ({FOLD_FILE}, "
                f"picked by the seed): num_labeled must be {FOLD_SIZE}, got {n}")
    return None


def fold_split(root: str, targets: np.ndarray, num_labeled: int, seed: int) -> np.ndarray:
    """The registry's split: fold ``seed`` (:func:`stl10_fold`), which must hold ``num_labeled``
    indices into the ``len(targets)`` train images."""
    fold = stl10_fold(root, seed)
    where = os.path.join(root, FOLDER, FOLD_FILE)
    if len(fold) != num_labeled or len(np.unique(fold)) != len(fold) or not 0 <= fold[0] <= fold[-1] < len(targets):
        raise DataError(f"{where}: fold {seed} must hold {num_labeled} distinct indices into the "
                        f"{len(targets)} train images; it has {len(fold)} ({fold[0]}..{fold[-1]})")
    return fold


SPEC = DatasetSpec(
    "stl10", 10, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), True, 5000, load_stl10,
    arch_defaults={"wideresnet": {"depth": 46, "width": 2, "scales": 5}},
    split=fold_split, unlabeled_split="train+unlabeled", check_labels=check_labels, num_seeds=NUM_FOLDS)
