"""A user dataset's images decoded once into a uint8 memory-mapped array, reused by every run.

The cache of a dataset lives in ``$FIXMATCH_RAY_CACHE`` (default: ``.fixmatch_ray_cache`` in the
data directory), one folder per content key: a hash of every file's relative path, byte size and
modification time, its label, and the image size asked for. So an edited, added or removed file
makes a new entry, and the runs and sweep trials of one dataset on one node share one entry.
The folder (``images.npy``: ``(N, H, W, 3)`` uint8 of every part, train first; ``targets.npy``;
``meta.json``: classes, parts, size, per-channel mean/std of the training images) is written
under a temporary name and renamed into place whole: a reader sees a complete entry or none, and
a failed decode leaves nothing. Readers map it copy-on-write (``mmap_mode="c"``): every process
shares the same page cache instead of holding its own copy.

Decoding: every file is opened with Pillow; a file Pillow cannot identify, or one it cannot
decode to the end (truncated, corrupt), is refused with its path: training never silently runs
on fewer images than the folders hold. Images become RGB; with ``image_size`` every image is
resized to ``image_size`` x ``image_size`` (bicubic, aspect ratio not kept); without it every
image must already be square and of one size.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from ...errors import DataFileError as DataError
from .layout import PARTS, Layout

VERSION = 1  # of the entry format and the decoding rule: a change makes new keys
CACHE_ENV = "FIXMATCH_RAY_CACHE"
CACHE_DIR = ".fixmatch_ray_cache"
PROGRESS_FROM = 2000  # images: a decode this long shows a progress bar


def cache_root(layout: Layout) -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(layout.root, CACHE_DIR)


def content_key(layout: Layout, image_size: int | None) -> str:
    doc = {"version": VERSION, "kind": layout.kind, "classes": layout.classes, "image_size": image_size,
           "files": layout.signature()}
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:24]


def _open(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read; remove it from the dataset") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None


def _check_sizes(files: list[str], image_size: int | None) -> int:
    """The side every image will have; without ``image_size`` all must be square and agree."""
    first = None
    for path in files:
        with _open(path) as img:
            size = img.size
        if image_size is not None:
            continue
        if size[0] != size[1]:
            raise DataError(f"{path}: {size[0]}x{size[1]} is not square; set image_size to resize every image")
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise DataError(f"images of different sizes ({first[0]}: {first[1][0]}x{first[1][1]}, {path}: "
                            f"{size[0]}x{size[1]}); set image_size to resize them to one")
    return image_size if image_size is not None else first[1][0]


def _decode(path: str, side: int) -> np.ndarray:
    from PIL import Image

    with _open(path) as img:
        try:
            rgb = img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{path}: truncated or corrupt image ({e}); replace or remove it") from None
    if rgb.size != (side, side):
        rgb = rgb.resize((side, side), Image.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def _progress(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("decoding images into the cache"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=True, disable=total < PROGRESS_FROM)


def _build(layout: Layout, image_size: int | None, where: str) -> None:
    """Decode every image of ``layout`` into the entry folder ``where`` (not there yet)."""
    files = [(p, label) for part in PARTS for p, label in layout.files[part]]
    side = _check_sizes([p for p, _ in files], image_size)
    counts = {part: len(layout.files[part]) for part in PARTS}
    n_fit = counts["train"] + counts["unlabeled"]  # the images the model trains on give mean/std
    parent = os.path.dirname(where)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        images = np.lib.format.open_memmap(os.path.join(tmp, "images.npy"), "w+", np.uint8, (len(files), side, side, 3))
        sums, squares = np.zeros(3), np.zeros(3)
        with _progress(len(files)) as bar:
            task = bar.add_task("decode", total=len(files))
            for i, (path, _) in enumerate(files):
                images[i] = _decode(path, side)
                if i < n_fit:
                    pixels = images[i].reshape(-1, 3).astype(np.float64) / 255.0
                    sums += pixels.sum(0)
                    squares += (pixels**2).sum(0)
                bar.advance(task)
        images.flush()
        del images
        np.save(os.path.join(tmp, "targets.npy"), np.array([label for _, label in files], dtype=np.int64))
        n_pix = n_fit * side * side
        mean = sums / n_pix
        std = np.sqrt(np.maximum(squares / n_pix - mean**2, 0.0))
        meta = {"version": VERSION, "root": layout.root, "kind": layout.kind, "classes": list(layout.classes),
                "image_size": side, "counts": counts, "mean": mean.round(6).tolist(), "std": std.round(6).tolist()}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, where)
        except OSError:  # another process (a sweep trial) finished the same entry first: keep its copy
            if not os.path.isfile(os.path.join(where, "meta.json")):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.rmdir(parent)  # the cache folder this decode made, when nothing else is in it
        except OSError:
            pass
        raise


def cached(layout: Layout, image_size: int | None) -> str:
    """The entry folder of ``layout`` at ``image_size``, decoding it first when it is not there."""
    where = os.path.join(cache_root(layout), content_key(layout, image_size))
    if not os.path.isfile(os.path.join(where, "meta.json")):
        _build(layout, image_size, where)
    return where


def read_meta(where: str) -> dict[str, Any]:
    with open(os.path.join(where, "meta.json")) as f:
        return json.load(f)


def read_arrays(where: str) -> tuple[np.ndarray, np.ndarray]:
    """The entry's images (memory-mapped copy-on-write: shared pages, writable views) and targets."""
    return (np.load(os.path.join(where, "images.npy"), mmap_mode="c"),
            np.load(os.path.join(where, "targets.npy")))
