"""An experiment's files on a local path or a URI (s3://, gs://, ...), through ``pyarrow.fs``.

Plain writes are atomic: locally a temporary file, fsync and rename; on object stores one object
upload (pyarrow uploads S3 objects as a multipart upload, which appears whole on completion).
Conditional writes (create-if-absent, compare-and-swap) back the experiment lease; they live in
``storage/conditional.py`` (pyarrow has none: local lock files, boto3 on S3, google-cloud-storage
on GCS).

URIs keep pyarrow's query parameters (``s3://bucket/exp?endpoint_override=host:9000&scheme=http``):
:func:`join` puts path parts before the query string.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import UserError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StorageError(UserError, ValueError):
    """A storage location that cannot be used: one line naming it and what would be right."""


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` names remote storage (``s3://``, ``gs://``, any scheme pyarrow opens) rather
    than this machine's files. The one local-or-remote test: a plain path and a ``file://`` URI
    are local (False)."""
    path = os.fspath(path)
    return bool(_SCHEME.match(path)) and not path.startswith("file://")


def local_path(path: str | os.PathLike) -> str:
    """The filesystem path of a local location: a plain path as it is, a ``file://`` URI without
    its scheme (percent-decoded). Call it only where :func:`is_uri` is False."""
    path = os.fspath(path)
    return unquote(path[len("file://"):]) if path.startswith("file://") else path


def normalize_storage(path: str | os.PathLike) -> str:
    """Remote URIs stay as they are; local locations (``file://`` too) become absolute plain paths
    (Ray requires it, and trials run in other working directories)."""
    return os.fspath(path) if is_uri(path) else str(Path(local_path(path)).expanduser().resolve())


def join(root: str | os.PathLike, *parts: str) -> str:
    """``root`` with path parts appended; a URI's query string stays at the end."""
    root = os.fspath(root)
    base, sep, query = root.partition("?") if _SCHEME.match(root) else (root, "", "")
    tail = [p.strip("/") for p in parts if p.strip("/")]
    if not tail:
        return root
    scheme = m.group(0) if (m := _SCHEME.match(base)) else ""
    head = [scheme + base[len(scheme):].rstrip("/")] if base else []
    return "/".join([*head, *tail]) + sep + query


def split_last(root: str | os.PathLike) -> tuple[str, str]:
    """``(parent, name)`` of a local path or a URI, the query string kept on the parent:
    ``s3://b/x/run?scheme=http`` -> ``("s3://b/x?scheme=http", "run")``."""
    root = os.fspath(root)
    base, sep, query = root.partition("?") if _SCHEME.match(root) else (root, "", "")
    parent, _, name = base.rstrip("/").rpartition("/")
    return parent + sep + query, name


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a local file through a temporary file in the same directory, fsync and a rename:
    a reader sees the old content or the new, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    # Makes a rename durable across a power loss; some filesystems refuse to fsync a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def open_filesystem(root: str) -> tuple[object, str]:
    """pyarrow's ``(FileSystem, path)`` for a URI; anything pyarrow cannot open is a StorageError."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(root)
    except (ValueError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(
            f"storage {root!r} cannot be opened ({msg}); expected a local path or a URI such as "
            "s3://bucket/path or gs://bucket/path (pyarrow query parameters such as "
            "?endpoint_override=host:port&scheme=http&region=... are allowed)") from None


def internal_file(name: str) -> bool:
    # Lock files of conditional writes and temporary files of atomic writes in progress.
    return name.startswith(".") and (name.endswith(".lock") or name.endswith(".tmp"))


class Store:
    """Files under ``root`` (a local path or a URI); ``rel`` arguments are '/'-separated paths
    relative to it."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root).rstrip("/") or os.fspath(root)
        self.remote = is_uri(self.root)
        if self.remote:
            self.fs, self.path = open_filesystem(self.root)
        else:
            import pyarrow.fs

            self.fs, self.path = pyarrow.fs.LocalFileSystem(), os.path.abspath(local_path(self.root) or ".")
        self._cond = None

    def uri(self, rel: str = "") -> str:
        """The location of ``rel`` as a path or URI (query parameters kept)."""
        return join(self.root, rel) if rel else self.root

    def _p(self, rel: str) -> str:
        rel = rel.strip("/")
        return posixpath.join(self.path, rel) if rel else self.path

    def _type(self, rel: str):
        return self.fs.get_file_info(self._p(rel)).type

    # -- queries -----------------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        """Is a file or directory at ``rel``? The root itself counts only as a directory."""
        import pyarrow.fs

        if not rel.strip("/"):
            return self.isdir()
        return self._type(rel) != pyarrow.fs.FileType.NotFound

    def isdir(self, rel: str = "") -> bool:
        import pyarrow.fs

        return self._type(rel) == pyarrow.fs.FileType.Directory

    def isfile(self, rel: str) -> bool:
        import pyarrow.fs

        return self._type(rel) == pyarrow.fs.FileType.File

    def subdirs(self, rel: str = "") -> list[str]:
        """Names of the directories directly under ``rel`` (none if it does not exist)."""
        import pyarrow.fs

        if not self.isdir(rel):
            return []
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self._p(rel), allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)

    def list(self, rel: str = "", recursive: bool = True) -> list[str]:
        """Files under the directory ``rel``, as sorted paths relative to it."""
        import pyarrow.fs

        if not self.isdir(rel):
            return []
        base = self._p(rel)
        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=recursive, allow_not_found=True))
        return sorted(posixpath.relpath(i.path, base) for i in infos
                      if i.type == pyarrow.fs.FileType.File and not internal_file(i.base_name))

    # -- reads and writes --------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes | None:
        """The file's content, or None if no file is there."""
        try:
            with self.fs.open_input_stream(self._p(rel)) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError:  # pyarrow's "is a directory" is a plain OSError locally
            if self.isfile(rel):
                raise
            return None

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` atomically (local: temp file + fsync + rename; remote: one object upload)."""
        if not self.remote:
            atomic_write_bytes(self._p(rel), data)
            return
        if self.fs.type_name not in ("s3", "gcs"):  # object stores have no directories to make
            self.fs.create_dir(posixpath.dirname(self._p(rel)), recursive=True)
        with self.fs.open_output_stream(self._p(rel)) as f:
            f.write(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def delete(self, rel: str) -> bool:
        """Remove the file or directory tree at ``rel``; False if nothing was there."""
        import pyarrow.fs

        kind = self._type(rel)
        if kind == pyarrow.fs.FileType.NotFound:
            return False
        if kind == pyarrow.fs.FileType.Directory:
            self.fs.delete_dir(self._p(rel))
        else:
            self.fs.delete_file(self._p(rel))
        return True

    def upload_dir(self, local: str | os.PathLike, rel: str) -> None:
        """Make ``rel`` a copy of the local directory ``local`` (what was there is replaced)."""
        import pyarrow.fs

        if not self.remote:
            dest = Path(self._p(rel))
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(local, dest)
            return
        self.delete(rel)
        pyarrow.fs.copy_files(os.path.abspath(local), self._p(rel),
                              source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=self.fs)

    def download_dir(self, rel: str, local: str | os.PathLike) -> None:
        """Copy the directory ``rel`` into the local directory ``local`` (created if needed)."""
        import pyarrow.fs

        if not self.isdir(rel):
            raise StorageError(f"{self.uri(rel)} is not a directory; nothing to download")
        Path(local).mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(self._p(rel), os.path.abspath(local), source_filesystem=self.fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())

    # -- conditional writes (the lease) ------------------------------------------------------
    def _conditional(self):
        if self._cond is None:
            from .conditional import backend_for

            self._cond = backend_for(self)
        return self._cond

    def read_with_token(self, rel: str) -> tuple[bytes, str] | None:
        """The file's content and a token naming this version of it (local: inode, mtime and
        size; GCS: the generation; S3: the ETag, which names the content, so rewriting identical
        bytes counts as unchanged), or None if absent."""
        return self._conditional().read(self._p(rel))

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` if nothing is there, atomically; False if something is."""
        return self._conditional().create(self._p(rel), data)

    def replace_if_unchanged(self, rel: str, data: bytes, token: str) -> bool:
        """Overwrite ``rel`` only if it is still the version ``token`` names; False otherwise."""
        return self._conditional().replace(self._p(rel), data, token)

    def delete_if_unchanged(self, rel: str, token: str) -> bool:
        """Delete ``rel`` only if it is still the version ``token`` names; False otherwise."""
        return self._conditional().delete(self._p(rel), token)


def uri_options(root: str) -> dict[str, str]:
    """The query parameters of a URI and its user:secret credentials, if any (single values)."""
    parts = urlsplit(root)
    opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.username:
        opts["access_key"] = unquote(parts.username)
    if parts.password:
        opts["secret_key"] = unquote(parts.password)
    return opts

