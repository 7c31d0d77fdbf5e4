"""Conditional writes for :class:`storage.Store`: atomic create-if-absent and compare-and-swap.

pyarrow.fs has no conditional writes, so these go around it: local files under an ``flock``-ed lock
file beside the target; S3 through boto3's conditional PutObject/DeleteObject (``IfNoneMatch='*'``,
``IfMatch=<ETag>``: AWS since 2024 for puts and 2025-09 for deletes; moto >= 5.2.2 serves them);
GCS through google-cloud-storage generation preconditions. boto3 and google-cloud-storage are
imported only here, when a lease is taken on such a store.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator

from . import StorageError, Store, atomic_write_bytes, fsync_dir, uri_options


def backend_for(store: Store):
    """The conditional-write backend for a store's filesystem; an unsupported one is a StorageError."""
    if not store.remote:
        return _LocalConditional()
    scheme = store.fs.type_name
    if scheme == "s3":
        return _S3Conditional(store)
    if scheme == "gcs":
        return _GcsConditional(store)
    raise StorageError(f"{store.root}: atomic create and compare-and-swap (the experiment lease) are not "
                       f"supported on {scheme} storage; use a local path or shared mount, s3:// or gs://")


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Hold an exclusive flock on ``.<name>.lock`` beside ``path`` (closing the file releases it)."""
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f".{name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _LocalConditional:
    """Local files: every conditional write holds an flock on ``.<name>.lock`` beside the file, so
    check and write happen as one step among the writers that use it (NFS: POSIX locks)."""

    @staticmethod
    def _token(st: os.stat_result) -> str:
        return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"

    def read(self, path: str) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as f:  # token and content from the same open file: consistent
                return f.read(), self._token(os.fstat(f.fileno()))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _current(self, path: str) -> str | None:
        try:
            return self._token(os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def create(self, path: str, data: bytes) -> bool:
        with _file_lock(path):
            directory, name = os.path.split(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)  # fails if the name exists, even for writers that skip the lock
                except FileExistsError:
                    return False
                except OSError:  # no hard links here (some FUSE/SMB mounts): the lock alone guards
                    if os.path.lexists(path):
                        return False
                    os.replace(tmp, path)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
        fsync_dir(Path(path).parent)
        return True

    def replace(self, path: str, data: bytes, token: str) -> bool:
        with _file_lock(path):
            if self._current(path) != token:
                return False
            atomic_write_bytes(path, data)
            return True

    def delete(self, path: str, token: str) -> bool:
        with _file_lock(path):
            if self._current(path) != token:
                return False
            os.unlink(path)
            return True


class _S3Conditional:
    """S3 conditional PutObject/DeleteObject through boto3 (pyarrow cannot send If-Match headers).
    The client follows the URI's endpoint_override/scheme/region/credentials, else boto3's own
    settings (AWS_ENDPOINT_URL, AWS_REGION, profiles...); a failed precondition (412), a concurrent
    conditional write (409) or a missing key is a lost race, anything else a StorageError."""

    LOST_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}
    LOST_STATUS = {"412", "409"}  # a missing bucket (404 NoSuchBucket) is an error, not a lost race

    def __init__(self, store: Store):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StorageError(f"{store.root}: leases on s3:// need boto3 (pip install boto3)") from None
        opts, kw = uri_options(store.root), {}
        if "endpoint_override" in opts:
            ep = opts["endpoint_override"]
            kw["endpoint_url"] = ep if "://" in ep else f"{opts.get('scheme', 'https')}://{ep}"
        if opts.get("tls_verify_certificates", "").lower() in ("false", "0"):
            kw["verify"] = False
        elif "tls_ca_file_path" in opts:
            kw["verify"] = opts["tls_ca_file_path"]
        for ours, theirs in (("access_key", "aws_access_key_id"), ("secret_key", "aws_secret_access_key")):
            if ours in opts:
                kw[theirs] = opts[ours]
        custom = "endpoint_url" in kw or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # Path-style addressing where pyarrow uses it (custom endpoints: MinIO, moto, on-prem).
        config = Config(s3={"addressing_style": "path"}) if custom else None
        self.root = store.root
        self.client = boto3.client("s3", region_name=opts.get("region") or store.fs.region or None,
                                   config=config, **kw)

    def _call(self, what: str, path: str, fn, **kw):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = path.partition("/")
        try:
            return fn(Bucket=bucket, Key=key, **kw)
        except ClientError as e:
            err = e.response.get("Error", {})
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if err.get("Code") in self.LOST_CODES or status in self.LOST_STATUS:
                return None
            raise StorageError(f"{self.root}: cannot {what} s3://{path}: "
                               f"{err.get('Code')}: {err.get('Message')}") from None
        except BotoCoreError as e:
            raise StorageError(f"{self.root}: cannot {what} s3://{path}: {e}") from None

    def read(self, path: str) -> tuple[bytes, str] | None:
        r = self._call("read", path, self.client.get_object)
        return None if r is None else (r["Body"].read(), r["ETag"])

    def create(self, path: str, data: bytes) -> bool:
        return self._call("create", path, self.client.put_object, Body=data, IfNoneMatch="*") is not None

    def replace(self, path: str, data: bytes, token: str) -> bool:
        return self._call("replace", path, self.client.put_object, Body=data, IfMatch=token) is not None

    def delete(self, path: str, token: str) -> bool:
        return self._call("delete", path, self.client.delete_object, IfMatch=token) is not None


class _GcsConditional:
    """GCS generation preconditions through google-cloud-storage (not tested against a server here)."""

    def __init__(self, store: Store):
        try:
            from google.api_core import exceptions
            from google.cloud import storage
        except ImportError:
            raise StorageError(f"{store.root}: leases on gs:// need google-cloud-storage "
                               "(pip install google-cloud-storage)") from None
        self.client, self.lost = storage.Client(), (exceptions.PreconditionFailed, exceptions.NotFound)

    def _blob(self, path: str):
        bucket, _, key = path.partition("/")
        return self.client.bucket(bucket).blob(key)

    def _try(self, fn, **kw) -> bool:
        try:
            fn(**kw)
            return True
        except self.lost:
            return False

    def read(self, path: str) -> tuple[bytes, str] | None:
        bucket, _, key = path.partition("/")
        while True:
            blob = self.client.bucket(bucket).get_blob(key)
            if blob is None:
                return None
            try:  # the content of exactly the generation we name
                return blob.download_as_bytes(if_generation_match=blob.generation), str(blob.generation)
            except self.lost:
                continue

    def create(self, path: str, data: bytes) -> bool:
        return self._try(self._blob(path).upload_from_string, data=data, if_generation_match=0)

    def replace(self, path: str, data: bytes, token: str) -> bool:
        return self._try(self._blob(path).upload_from_string, data=data, if_generation_match=int(token))

    def delete(self, path: str, token: str) -> bool:
        return self._try(self._blob(path).delete, if_generation_match=int(token))
