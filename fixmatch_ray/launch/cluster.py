"""Cluster-side helpers of the driver: join or start Ray, the job's environment, and the
user-facing error behind a failed Train run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from ..errors import UserError
from .quiet import TRAIN_LOG_LEVEL_ENV, quiet_forwarded_output


# Ray Train's controller polls workers every 2 s by default and each ray.train.report waits for
# a poll: measured here, 1.9 s a report, 23 % of a paper-length WRN-28-2 run on an H100.
# 0.2 s costs 0.2 s a report (3 %); a user's own setting wins.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


# Custom resource that sweep trial drivers (which only wait on their Train run) hold instead of a
# CPU or GPU; cluster.yaml gives it to the head node, a local Ray gets it automatically.
DRIVER_RESOURCE = "fixmatch_driver"


LOCAL_DRIVER_SLOTS = 1000
TRIAL_DRIVER_CPU = 0.01  # what a trial's driver takes instead on a cluster without DRIVER_RESOURCE


def trial_driver_request(have: Mapping[str, float]) -> dict[str, float]:
    """What a sweep trial's driver holds on a cluster with resources ``have`` (no GPU): the driver
    resource where the cluster has it, else a sliver of CPU."""
    return {DRIVER_RESOURCE: 1} if have.get(DRIVER_RESOURCE, 0) > 0 else {"CPU": TRIAL_DRIVER_CPU}


HEALTH_CHECK_DEFAULT_S = "0.2"


def job_env() -> dict[str, str]:
    """Variables every process of the job gets (its ``runtime_env``)."""
    return {HEALTH_CHECK_ENV: os.environ.get(HEALTH_CHECK_ENV, HEALTH_CHECK_DEFAULT_S),
            TRAIN_LOG_LEVEL_ENV: os.environ.get(TRAIN_LOG_LEVEL_ENV, "INFO")}


def ensure_ray(address: str | None = None, min_cpus: float = 1) -> None:
    """Join ``address`` / ``RAY_ADDRESS`` if given, else the live cluster ``ray start`` recorded on
    this machine (with a one-line notice), else start a local Ray sized for the job.

    A local Ray gets at least ``min_cpus`` logical CPUs (and one more for the driver side), so a
    2-core machine cannot deadlock waiting for CPUs its workers hold. The dashboard, which frees
    the resources of crashed runs, listens on 127.0.0.1 only. A recorded cluster that is not
    running is a one-line :class:`ClusterError` (``ray.init`` would try to join it, then refuse
    ``num_cpus`` with a traceback).
    """
    import ray

    if ray.is_initialized():
        return
    quiet_forwarded_output(ray._private.worker)  # private: the driver's log deduplicators (see .quiet)
    quiet = {"logging_level": logging.WARNING}  # Ray's start-up chatter would bury our output
    runtime_env = {"env_vars": job_env()}
    address = address or os.environ.get("RAY_ADDRESS") or recorded_cluster()
    if address:
        check_joinable(address)
        try:
            with _keep_sigterm_handler():
                ray.init(address=address, runtime_env=runtime_env, **quiet)
        except ConnectionError as e:  # Ray's own, a traceback chained to its GCS client's
            raise ClusterError(f"could not join the Ray cluster at {address}: {e}") from None
        return
    cpus = max(os.cpu_count() or 1, int(min_cpus + 1.999))
    with _keep_sigterm_handler():
        ray.init(num_cpus=cpus, resources={DRIVER_RESOURCE: LOCAL_DRIVER_SLOTS}, dashboard_host="127.0.0.1",
                 include_dashboard=True, runtime_env=runtime_env, **quiet)


@contextlib.contextmanager
def _keep_sigterm_handler():
    """A SIGTERM handler of the caller's own (the sweep's graceful stop) survives ``ray.init``, which
    replaces it with ``sys.exit`` while its core worker's crash handler answers SIGTERM with a stack
    dump and an abort (the driver died of SIGABRT instead of stopping its trials)."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


class ClusterError(UserError, RuntimeError):
    """A Ray cluster that cannot be joined: not running, not a GCS at that port, or refusing this
    process's token."""


def _listening(address: str) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (3 s timeout)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except (OSError, ValueError):
        return False
    return True


def _speaks_grpc(address: str, timeout_s: float = 5) -> bool:
    """Whether the server at ``address`` completes a gRPC (HTTP/2) handshake: a GCS does without a
    token; anything else would leave Ray's client waiting 40 s per try."""
    import grpc  # a Ray dependency

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()
    return True


@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 goes to /dev/null inside the block (C++ loggers write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_joinable(address: str) -> None:
    """One-line :class:`ClusterError` for the common ways a join fails, found in seconds: nothing
    listening, something that is not a GCS (the dashboard's port, say), a token refused.

    ``ray.init`` instead retries an address that is not a GCS for minutes, and a cluster whose token
    this process lacks for ~15 s, printing a warning a second, then raises a chained traceback.
    ``auto`` and ``ray://`` (Ray Client) addresses are left to Ray.
    """
    if address == "auto" or "://" in address:
        return
    if not _listening(address):
        raise ClusterError(f"no Ray cluster is listening at {address}; check the address (host:port of "
                           "the head's GCS, as `ray start --head` printed it) and that the head is up")
    if not _speaks_grpc(address):
        raise ClusterError(f"{address} is not a Ray head's GCS port (it accepts connections but not gRPC; the "
                           "dashboard's port 8265 is for `ray job submit`); give host:port of the GCS, 6379 unless "
                           "`ray start --head --port` chose another")
    if _token_refused(address):
        raise ClusterError(
            f"the Ray cluster at {address} requires token authentication and refused this process's token "
            "(missing or not the cluster's); set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
            "RAY_AUTH_TOKEN_PATH) to the cluster's token"
        )


def _token_refused(address: str) -> bool:
    """Whether the GCS at ``address`` refuses this process's auth token, asked the way ``ray.init``
    first does: through Ray's private ``ray._raylet.GcsClient`` (``tests/launch/test_ray_internals.py``
    pins it). Anything else, a Ray without it included, is left for ``ray.init`` to report."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return False
    try:
        with _stderr_to_devnull():  # its C++ logger would add a warning line of its own
            GcsClient(address=address)
    except AuthenticationError:
        return True
    except Exception:  # anything else: ray.init reports it
        return False
    return False


def recorded_address_file() -> Path:
    """Where ``ray start`` records a live cluster: Ray's own rule (its private
    ``ray._common.utils.get_ray_address_file``), written here so that a dry run can look without
    importing Ray; ``tests/launch/test_ray_internals.py`` checks it against the installed Ray's."""
    env, linux = os.environ, sys.platform.startswith("linux")
    if "RAY_TMPDIR" in env:
        tmp = env["RAY_TMPDIR"]
    elif linux and "TMPDIR" in env:
        tmp = env["TMPDIR"]
    else:
        tmp = "/tmp" if linux or sys.platform.startswith("darwin") else tempfile.gettempdir()
    return Path(tmp, "ray", "ray_current_cluster")


def recorded_cluster() -> str | None:
    """The address of the cluster ``ray start`` recorded in Ray's temp dir, if it is running
    (with a one-line notice on stderr); None when none is recorded; ClusterError when it is dead."""
    path = recorded_address_file()
    try:
        address = Path(path).read_text().strip()
    except OSError:
        return None
    if not address:
        return None
    if not _listening(address):
        raise ClusterError(
            f"{path} records a Ray cluster at {address} that is not running (stopped uncleanly?); "
            "clear it with `ray stop`, or pass --address to choose a cluster"
        ) from None
    print(f"joining the Ray cluster already running on this machine at {address} (started by `ray start`; "
          "`ray stop` ends it); its resources bound this job", file=sys.stderr, flush=True)
    return address


def user_error(err: BaseException) -> BaseException | None:
    """The user-facing error (bad config, missing data, divergence) behind a failed Train run."""
    failures = getattr(err, "worker_failures", None) or {}
    for exc in [*failures.values(), err]:
        seen = 0
        while exc is not None and seen < 10:
            if isinstance(exc, UserError):
                return exc
            exc = getattr(exc, "cause", None) or exc.__cause__
            seen += 1
    return None



def reap_orphan_placement_groups() -> int:
    """Remove placement groups still held by jobs that are over; the number removed.

    A sweep driver killed at the wrong moment can leave its Train run's placement group behind
    (its controller creates one just as the job is torn down: seen here with Ray 2.60), and the
    resumed sweep then waits forever for the GPUs it holds. Detached groups are left alone.
    """
    import ray
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_jobs, list_placement_groups

    try:
        live = {j.job_id for j in list_jobs() if j.status == "RUNNING" and j.job_id}
        groups = list_placement_groups(detail=True, limit=10000)
    except Exception:  # no dashboard/state API: nothing we can check
        return 0
    removed = 0
    for g in groups:
        if g.state in ("CREATED", "PENDING", "RESCHEDULING") and not g.is_detached and g.creator_job_id not in live:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(g.placement_group_id)))
            removed += 1
    return removed



def cluster_resources() -> dict[str, float]:
    """The joined cluster's total resources."""
    import ray

    return ray.cluster_resources()


def free_resources() -> dict[str, float]:
    """The joined cluster's resources that nothing holds now."""
    import ray

    return ray.available_resources()
