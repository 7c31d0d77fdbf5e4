"""Store on a local path and on a real S3 API (moto's server, started by the test): round trips,
listings, URIs with pyarrow query parameters, atomic create and compare-and-swap under races."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from fixmatch_ray.storage import Store, StorageError, atomic_write_bytes, join


def test_join_puts_parts_before_the_query_string():
    q = "s3://bucket/exp?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(q, "train") == "s3://bucket/exp/train?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(q, "train/", "/run_1") == "s3://bucket/exp/train/run_1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join("s3://bucket/exp/", "a") == "s3://bucket/exp/a"
    assert join("s3://bucket", "a", "b") == "s3://bucket/a/b"
    assert join("s3://bucket/exp?region=eu-west-1") == "s3://bucket/exp?region=eu-west-1"
    assert join("results/exp", "train") == "results/exp/train"
    assert join("/abs/exp/", "", "train") == "/abs/exp/train"
    assert join("/", "x") == "/x" and join("", "x") == "x" and join("file:///", "x") == "file:///x"
    assert join("odd?name", "x") == "odd?name/x"  # a local path's '?' is a character, not a query
    assert Store(q).uri("train") == join(q, "train")


def test_round_trip(storage_root):
    store = Store(storage_root)
    assert not store.exists() and store.read_bytes("a.bin") is None and store.read_text("x/y.txt") is None
    store.write_bytes("a.bin", bytes(range(256)))
    store.write_text("x/y.txt", "héllo\n")
    assert store.read_bytes("a.bin") == bytes(range(256))
    assert store.read_text("x/y.txt") == "héllo\n"
    store.write_bytes("a.bin", b"second")  # a rewrite replaces the content whole
    assert store.read_bytes("a.bin") == b"second"
    assert store.exists() and store.isdir() and store.exists("a.bin") and store.exists("x")
    assert store.isfile("a.bin") and not store.isdir("a.bin") and store.isdir("x") and not store.isfile("x")
    assert store.read_bytes("x") is None  # a directory is not a file
    assert not store.exists("nope") and not store.isfile("nope")


def test_subdirs_list_delete(storage_root):
    store = Store(storage_root)
    assert store.subdirs() == [] and store.list() == [] and not store.delete("t1")
    for rel in ("t2/params.json", "t1/result.json", "t1/ckpt/checkpoint.pt", "top.md"):
        store.write_bytes(rel, rel.encode())
    assert store.subdirs() == ["t1", "t2"] and store.subdirs("t1") == ["ckpt"] and store.subdirs("top.md") == []
    assert store.list() == ["t1/ckpt/checkpoint.pt", "t1/result.json", "t2/params.json", "top.md"]
    assert store.list(recursive=False) == ["top.md"]
    assert store.list("t1") == ["ckpt/checkpoint.pt", "result.json"]
    assert store.delete("t1/result.json") and store.list("t1") == ["ckpt/checkpoint.pt"]
    assert store.delete("t1") and not store.exists("t1") and store.subdirs() == ["t2"]
    assert not store.delete("t1")


def test_upload_replaces_and_download_round_trips(storage_root, tmp_path):
    store = Store(storage_root)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.bin").write_bytes(b"\x00b")
    store.write_bytes("hp/stale.txt", b"from an earlier upload")
    store.upload_dir(src, "hp")
    assert store.list("hp") == ["a.txt", "sub/b.bin"]
    dest = tmp_path / "dest"
    store.download_dir("hp", dest)
    assert (dest / "a.txt").read_text() == "a" and (dest / "sub" / "b.bin").read_bytes() == b"\x00b"
    with pytest.raises(StorageError, match="is not a directory"):
        store.download_dir("missing", dest)


def test_uri_with_query_parameters_needs_no_endpoint_variable(s3_server, monkeypatch):
    from s3server import s3_env

    env, unset = s3_env(s3_server, endpoint=False)
    for key in unset:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = s3_server.uri(query=True)
    assert "?endpoint_override=" in root and "AWS_ENDPOINT_URL" not in os.environ
    store = Store(root)
    store.write_text("train/run_1/record.json", "{}")
    sub = Store(store.uri("train"))  # a joined URI keeps its query and reaches the same objects
    assert sub.read_text("run_1/record.json") == "{}" and sub.subdirs() == ["run_1"]
    assert store.create_exclusive("lease.json", b"1") and not store.create_exclusive("lease.json", b"2")
    key = root.split("?")[0].removeprefix(f"s3://{s3_server.bucket}/")
    obj = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{key}/train/run_1/record.json")
    assert obj["Body"].read() == b"{}"


@pytest.mark.parametrize("root, expect", [
    ("foo://bucket/x", "Unrecognized filesystem type"),
    ("s3://bucket/x?endpont_override=127.0.0.1:1", "Unexpected query parameter in S3 URI: 'endpont_override'"),
])
def test_unopenable_uri_is_one_line(root, expect):
    with pytest.raises(StorageError) as e:
        Store(root)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in msg and root in msg and expect in msg


def test_conditional_writes_need_a_supported_backend(monkeypatch, tmp_path):
    with pytest.raises(StorageError, match="not supported on mock storage"):
        Store("mock:///exp").create_exclusive("lease.json", b"x")
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    with pytest.raises(StorageError, match=r"leases on s3:// need boto3 \(pip install boto3\)"):
        Store("s3://bucket/exp?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1").read_with_token("x")
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(StorageError, match="leases on gs:// need google-cloud-storage"):
        Store("gs://bucket/exp").create_exclusive("lease.json", b"x")


def _race(n: int, fn) -> list:
    """Run ``fn(i)`` in ``n`` threads released at the same moment; their results in order."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_create_exclusive_race_has_one_winner(storage_root):
    store = Store(storage_root)
    for round_ in range(10):
        rel = f"lease-{round_}.json"
        won = _race(2, lambda i: store.create_exclusive(rel, f"driver {i}".encode()))
        assert sorted(won) == [False, True], won
        assert store.read_bytes(rel) == f"driver {won.index(True)}".encode()
    assert store.list() == [f"lease-{i}.json" for i in range(10)]  # no lock or temp files listed


def test_create_exclusive_where_hard_links_fail(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")  # what FUSE/SMB mounts without links say

    monkeypatch.setattr(os, "link", no_links)
    store = Store(tmp_path)
    for round_ in range(10):
        won = _race(2, lambda i: store.create_exclusive(f"l{round_}", f"driver {i}".encode()))
        assert sorted(won) == [False, True] and store.read_bytes(f"l{round_}") == f"driver {won.index(True)}".encode()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_compare_and_swap(storage_root):
    store = Store(storage_root)
    assert store.read_with_token("l.json") is None
    assert not store.replace_if_unchanged("l.json", b"x", "no-such-version")
    assert store.create_exclusive("l.json", b"v1")
    data, t1 = store.read_with_token("l.json")
    assert data == b"v1"
    assert store.replace_if_unchanged("l.json", b"v2", t1)
    assert not store.replace_if_unchanged("l.json", b"v3", t1)  # t1 names a version that is gone
    data, t2 = store.read_with_token("l.json")
    assert data == b"v2" and t2 != t1
    store.write_bytes("l.json", b"v4 by a plain write")  # any write makes older tokens stale
    assert not store.replace_if_unchanged("l.json", b"v5", t2) and not store.delete_if_unchanged("l.json", t2)
    data, t4 = store.read_with_token("l.json")
    won = _race(2, lambda i: store.replace_if_unchanged("l.json", f"swap {i}".encode(), t4))
    assert sorted(won) == [False, True] and store.read_bytes("l.json") == f"swap {won.index(True)}".encode()
    data, t5 = store.read_with_token("l.json")
    assert store.delete_if_unchanged("l.json", t5) and store.read_with_token("l.json") is None
    assert not store.delete_if_unchanged("l.json", t5)


def test_s3_errors_are_one_line_not_a_lost_race(s3_env):
    store = Store("s3://no-such-bucket/exp")
    with pytest.raises(StorageError) as e:
        store.create_exclusive("lease.json", b"x")
    assert "\n" not in str(e.value) and "s3://no-such-bucket/exp/lease.json: NoSuchBucket" in str(e.value)


def test_atomic_write_bytes_leaves_old_content_on_failure(tmp_path):
    path = tmp_path / "d" / "f.yaml"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # fails inside the write, after the temp file exists
    assert path.read_bytes() == b"old" and sorted(os.listdir(path.parent)) == ["f.yaml"]


def test_pyarrow_s3_through_endpoint_variable(s3_env):
    """What Ray Train/Tune do with storage_path='s3://...': pyarrow with only AWS_ENDPOINT_URL set.
    6 MiB crosses pyarrow's multipart part size (moto 5.2.1 broke multipart completion for it)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(f"s3://{s3_env.bucket}/ray-check")
    big = os.urandom(6 * 2**20)
    with fs.open_output_stream(f"{path}/checkpoint_000000/model.pt") as f:
        f.write(big)
    with fs.open_input_stream(f"{path}/checkpoint_000000/model.pt") as f:
        assert f.read() == big
    assert Store(f"s3://{s3_env.bucket}/ray-check").list() == ["checkpoint_000000/model.pt"]


def test_local_store_accepts_relative_paths_and_file_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Store("results/exp").write_text("a.txt", "x")
    assert (tmp_path / "results" / "exp" / "a.txt").read_text() == "x"
    assert Store(f"file://{tmp_path}/results/exp").read_text("a.txt") == "x"
    assert Path(Store("results/exp").uri("a.txt")) == Path("results/exp/a.txt")


def test_split_last_keeps_the_query_on_the_parent():
    from fixmatch_ray.storage import split_last

    assert split_last("s3://bucket/exp/run?endpoint_override=127.0.0.1:9000&scheme=http") == (
        "s3://bucket/exp?endpoint_override=127.0.0.1:9000&scheme=http", "run")
    assert split_last("/data/results/run/") == ("/data/results", "run")
    parent, name = split_last("s3://bucket/exp/run?scheme=http")
    assert join(parent, name) == "s3://bucket/exp/run?scheme=http"


def test_file_uris_are_local_everywhere(tmp_path, monkeypatch):
    """One local-or-remote test (``is_uri``): a plain path and a file:// URI are local wherever a
    location is judged (storage paths, TensorBoard, W&B's directory, a run's tracker key)."""
    from fixmatch_ray.tracking.wandb import WandbOptions
    from fixmatch_ray.errors import ConfigError
    from fixmatch_ray.storage import is_uri, local_path, normalize_storage
    from fixmatch_ray.tracking.tensorboard import TensorBoardTracker
    from fixmatch_ray.train import tracked_run

    assert [is_uri(p) for p in ("s3://b/x", "gs://b", "hdfs://h/x", "file:///tmp/x", "/tmp/x", "rel/x")] == [
        True, True, True, False, False, False]
    assert local_path("file:///tmp/a%20b") == "/tmp/a b" and local_path("rel/x") == "rel/x"
    monkeypatch.chdir(tmp_path)
    assert normalize_storage(f"file://{tmp_path}/s") == normalize_storage("s") == str(tmp_path.resolve() / "s")
    assert normalize_storage("s3://b/x?region=eu") == "s3://b/x?region=eu"
    tb = TensorBoardTracker(f"file://{tmp_path}/tb")
    tb.log_metrics({"step": 1, "test_acc": 50.0}, 1)
    tb.close()
    assert tb.remote is None and any((tmp_path / "tb").iterdir())  # written in place, not copied
    assert WandbOptions(project="p", dir=f"file://{tmp_path}/w").dir
    with pytest.raises(ConfigError, match="must be a local directory"):
        WandbOptions(project="p", dir="s3://bucket/w")
    run = tracked_run(f"file://{tmp_path}/run")
    assert (run.key, run.name, run.local_dir) == (f"{tmp_path}/run", "run", f"{tmp_path}/run")
