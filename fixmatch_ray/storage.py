"""Read and write an experiment's small files, on a local path or a URI (s3://, gs://...)."""
from __future__ import annotations

import os
from pathlib import Path


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a local path or a URI; a URI's query string (pyarrow's
    ``?endpoint_override=...``) stays at the end."""
    root = os.fspath(root)
    base, sep, query = root.partition("?") if "://" in root else (root, "", "")
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + sep + query


class Store:
    """Files under ``root``; local writes are atomic (temp file + rename), remote ones are
    single-object puts (atomic on S3/GCS)."""

    def __init__(self, root: str | os.PathLike):
        root = os.fspath(root)
        self.root = root.rstrip("/")
        self.remote = "://" in root
        if self.remote:
            import pyarrow.fs

            self.fs, self.path = pyarrow.fs.FileSystem.from_uri(self.root)

    def exists(self) -> bool:
        if not self.remote:
            return Path(self.root).is_dir()
        import pyarrow.fs

        return self.fs.get_file_info(self.path).type == pyarrow.fs.FileType.Directory

    def subdirs(self) -> list[str]:
        if not self.remote:
            return sorted(p.name for p in Path(self.root).iterdir() if p.is_dir()) if self.exists() else []
        import pyarrow.fs

        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None if it does not exist."""
        try:
            if not self.remote:
                return (Path(self.root) / rel).read_text(encoding="utf-8")
            with self.fs.open_input_stream(f"{self.path}/{rel}") as f:
                return f.read().decode("utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:  # pyarrow raises OSError for a missing remote object
            if self.remote and "not found" in str(e).lower() or "no such file" in str(e).lower():
                return None
            raise

    def write_bytes(self, rel: str, data: bytes) -> None:
        if not self.remote:
            from .training.checkpoint import atomic_write_bytes

            atomic_write_bytes(Path(self.root) / rel, data)
            return
        parent = f"{self.path}/{rel}".rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(f"{self.path}/{rel}") as f:
            f.write(data)

    def upload_dir(self, local: str | os.PathLike, rel: str) -> None:
        """Copy a local directory to ``rel`` under the store (a plain move when local)."""
        import shutil

        if not self.remote:
            dest = Path(self.root) / rel
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(local, dest)
            return
        import pyarrow.fs

        pyarrow.fs.copy_files(os.fspath(local), f"{self.root}/{rel}")
