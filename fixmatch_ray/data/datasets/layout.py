"""Which files a user's own dataset holds: the class-folder layout or the CSV layout (no decoding).

Class folders under the data directory ``ROOT``::

    ROOT/train/<class>/...      the labeled pool (every file under a class folder, any depth)
    ROOT/unlabeled/...          optional: images without labels, any depth
    ROOT/test/<class>/...       the test set
    ROOT/val/<class>/...        optional: the validation set

or CSV files of ``path,label`` rows (a header row ``path,label`` first; paths relative to ``ROOT``
or absolute): ``ROOT/train.csv`` (an empty label: an unlabeled image), ``ROOT/test.csv`` and an
optional ``ROOT/val.csv``. The CSV layout is used when ``ROOT/train.csv`` exists. Classes are the
training set's class names (folder names or labels), sorted; class ``i`` is the ``i``-th name.
Files and folders whose name starts with a dot are skipped (``.DS_Store``, the cache). Within a
split, files are in sorted path order, class by class for the folder layout, row order for CSV.
Every problem is one :class:`~fixmatch_ray.errors.DataError` line naming the file or folder.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ...errors import DataFileError as DataError

PARTS = ("train", "unlabeled", "test", "val")  # the parts of a layout, in the cache's order


@dataclass(frozen=True)
class Layout:
    root: str
    kind: str  # folders | csv
    classes: tuple[str, ...]
    # per part: (path, class id or -1) in load order; paths absolute
    files: dict[str, list[tuple[str, int]]]

    def signature(self) -> list:
        """What the cache is keyed by: each file's path relative to the root, byte size and
        modification time (ns), part by part, with its label."""
        out = []
        for part in PARTS:
            for path, label in self.files[part]:
                st = os.stat(path)
                out.append([part, os.path.relpath(path, self.root), label, st.st_size, st.st_mtime_ns])
        return out


def _visible(name: str) -> bool:
    return not name.startswith(".")


def walk_files(folder: str) -> list[str]:
    """Every file under ``folder`` (any depth, sorted, dot-names skipped)."""
    out = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if _visible(d))
        out += [os.path.join(here, f) for f in sorted(files) if _visible(f)]
    return out


def _class_dirs(root: str, part: str) -> dict[str, list[str]]:
    where = os.path.join(root, part)
    entries = sorted(e for e in os.listdir(where) if _visible(e))
    stray = [e for e in entries if not os.path.isdir(os.path.join(where, e))]
    if stray:
        raise DataError(f"{os.path.join(where, stray[0])}: a file directly under {part}/; expected one folder "
                        f"per class ({part}/<class>/<image>)")
    out = {}
    for name in entries:
        files = walk_files(os.path.join(where, name))
        if not files:
            raise DataError(f"{os.path.join(where, name)}: empty class folder; put the class's images there or remove it")
        out[name] = files
    if not out:
        raise DataError(f"{where}: no class folders; expected {part}/<class>/<image>")
    return out


def _label_parts(root: str, classes: tuple[str, ...], part: str, by_class: dict[str, list[str]]) -> list:
    ids = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in by_class if c not in ids]
    if unknown:
        raise DataError(f"{os.path.join(root, part, unknown[0])}: class {unknown[0]!r} is not in train/ "
                        f"(its classes: {', '.join(classes)})")
    return [(f, ids[c]) for c in classes if c in by_class for f in by_class[c]]


def folder_layout(root: str) -> Layout:
    train = _class_dirs(root, "train")
    classes = tuple(train)
    files = {"train": [(f, i) for i, c in enumerate(classes) for f in train[c]]}
    unlabeled = os.path.join(root, "unlabeled")
    files["unlabeled"] = [(f, -1) for f in walk_files(unlabeled)] if os.path.isdir(unlabeled) else []
    files["test"] = _label_parts(root, classes, "test", _class_dirs(root, "test"))
    has_val = os.path.isdir(os.path.join(root, "val"))
    files["val"] = _label_parts(root, classes, "val", _class_dirs(root, "val")) if has_val else []
    return Layout(root, "folders", classes, files)


def _rows(root: str, name: str) -> list[tuple[str, str, int]]:
    """(absolute path, label, line number) of each row of ``ROOT/name``."""
    path = os.path.join(root, name)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0][:2]] != ["path", "label"]:
        raise DataError(f"{path}: expected a header row 'path,label' first")
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip():
            raise DataError(f"{path}, line {n}: expected 'path,label' (an empty label: unlabeled), got {','.join(row)!r}")
        file = os.path.join(root, row[0].strip())
        if not os.path.isfile(file):
            raise DataError(f"{path}, line {n}: {file} does not exist")
        out.append((file, row[1].strip(), n))
    if not out:
        raise DataError(f"{path}: no rows after the header")
    return out


def csv_layout(root: str) -> Layout:
    train = _rows(root, "train.csv")
    classes = tuple(sorted({label for _, label, _ in train if label}))
    if not classes:
        raise DataError(f"{os.path.join(root, 'train.csv')}: no labeled row (every label is empty)")
    ids = {c: i for i, c in enumerate(classes)}
    files = {"train": [(f, ids[label]) for f, label, _ in train if label],
             "unlabeled": [(f, -1) for f, label, _ in train if not label]}
    for part in ("test", "val"):
        name = f"{part}.csv"
        if part == "val" and not os.path.isfile(os.path.join(root, name)):
            files[part] = []
            continue
        rows = []
        for f, label, n in _rows(root, name):
            if label not in ids:
                what = "an empty label" if not label else f"class {label!r}, which is not in train.csv"
                raise DataError(f"{os.path.join(root, name)}, line {n}: {what} (classes: {', '.join(classes)})")
            rows.append((f, ids[label]))
        files[part] = rows
    return Layout(root, "csv", classes, files)


def read_layout(root: str) -> Layout:
    """The layout of the dataset under ``root`` (CSV when ``train.csv`` is there, else folders)."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DataError(f"data_dir {root} does not exist; expected train/<class>/ and test/<class>/ folders "
                        "(or train.csv and test.csv) there")
    if os.path.isfile(os.path.join(root, "train.csv")):
        return csv_layout(root)
    for part in ("train", "test"):
        if not os.path.isdir(os.path.join(root, part)):
            raise DataError(f"{os.path.join(root, part)} does not exist; expected train/<class>/ and test/<class>/ "
                            "folders (or train.csv and test.csv) in the data directory")
    return folder_layout(root)
