"""``sweep FILE --dry-run``: every check the sweep makes before it starts, read-only, then its plan.

The real sweep probes storage by writing a file, takes a lease, writes ``sweep.yaml`` and may
download data; here each check only reads: the nearest existing directory of a local storage
path must be writable, a URI must open (pyarrow), an earlier experiment of the same name must
have been started from the same file (or ``--fresh`` is given), each dataset must be present or
downloadable. The cluster's resources are read only when a cluster is reachable (``--address``,
``$RAY_ADDRESS``, or a live cluster ``ray start`` recorded here); no local Ray is started for a
plan, and without one Ray is not even imported. No Ray here.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import ConfigError, DataError
from ..storage import Store, is_uri
from ..tracking import check_tracking
from .lease import LEASE_FILE, Holder, Lease, LeaseHeld
from .plan import DEFAULTS, cluster_line, format_plan, load_step_times, make_plan

if TYPE_CHECKING:
    from ..config import SweepSpec

SPEC_FILE = "sweep.yaml"  # the sweep file as given, saved in the experiment directory (launch.sweep's too)


def recorded_address_file() -> Path:
    """Where ``ray start`` records a live cluster: Ray's rule (``ray._common.utils``), without importing Ray."""
    tmp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(tmp or "/tmp") / "ray" / "ray_current_cluster"


def reachable_cluster(address: str | None) -> tuple[Mapping[str, float] | None, str]:
    """The resources of the cluster the sweep would join, with one line saying which; (None, why)
    when there is none to read (the sweep would start a local Ray: not started for a plan)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and recorded_address_file().is_file():
        from .cluster import recorded_cluster  # imports Ray; a dead recorded cluster is a ClusterError

        address = recorded_cluster()
    if not address:
        return None, ("no cluster reachable: no --address, $RAY_ADDRESS or live `ray start` cluster; "
                      "assuming the resources the file asks for (--max-concurrent-trials N: N at once)")
    from .cluster import cluster_resources, ensure_ray

    ensure_ray(address)
    have = cluster_resources()
    return have, cluster_line(f"cluster at {address}", have)


def check_storage_readonly(storage: str) -> None:
    """The checks of the sweep's storage probe (:func:`.sweep.check_storage`, which writes a file), reading only."""
    if is_uri(storage):
        Store(storage)  # pyarrow opens it: a malformed URI or unknown scheme is a StorageError line
        return
    path = Path(storage)
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"storage: cannot write to {storage!r} ({path} is not a writable directory); "
                          "choose a writable path")


def check_experiment_readonly(spec: "SweepSpec", sweep_file: str, fresh: bool) -> str:
    """What the sweep would do with ``<storage>/<name>``; a resume from another file is the
    sweep's own ConfigError."""
    experiment = spec.experiment_path()
    store = Store(experiment)
    held = check_lease_readonly(store)
    old = store.read_text(SPEC_FILE)
    if old is None:
        return f"new experiment {experiment}{held}"
    if fresh:
        return f"--fresh: the earlier {experiment} would be moved aside{held}"
    if old != Path(sweep_file).read_text(encoding="utf-8"):
        raise ConfigError(
            f"{sweep_file} differs from the one {experiment} was started with; resume with the "
            f"same file, or pass --fresh (the old experiment is moved aside) or another --name"
        )
    return f"resumes {experiment} (finished trials are not rerun){held}"


def check_lease_readonly(store: Store) -> str:
    """The sweep's lease check without taking the lease: a live driver on the experiment is the
    sweep's :class:`LeaseHeld`; a dead one's lease would be taken over (returned as a note)."""
    data = store.read_bytes(LEASE_FILE)
    if data is None:
        return ""
    lease, rec = Lease(store), Holder.parse(data)
    reason = lease._dead(rec)  # the rule acquire() applies
    if reason is None:
        raise LeaseHeld(f"{store.uri()} is in use by another driver ({rec.describe()}); wait for it to finish "
                        f"or stop it: its lease is taken over once its process is gone (same host) or after "
                        f"{lease.stale_after_s:g} s without a heartbeat")
    return f"; its lease would be taken over: the previous driver {reason}"


def check_data_readonly(spec: "SweepSpec") -> list[str]:
    """Each dataset the trials read is present, or will be downloaded; one note per download."""
    from ..data.datasets import check_dataset

    notes = []
    for name, root, download in sorted({(t.run.dataset, t.run.data_dir, t.run.download) for t in spec.trials}):
        try:
            check_dataset(name, root, False, decode=False)  # a folder dataset: listed, not decoded
        except DataError as e:
            if not download:
                raise ConfigError(str(e)) from None
            notes.append(f"{name} is not in {root}: the sweep downloads it first")
    return notes


def dry_run(spec: "SweepSpec", args: argparse.Namespace) -> int:
    """Check everything the sweep would check, print the plan; write nothing, start nothing."""
    table = load_step_times(args.step_times) if args.step_times else DEFAULTS
    check_tracking(spec.tracking)
    check_storage_readonly(spec.storage)
    where = check_experiment_readonly(spec, args.sweep_file, args.fresh)
    remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
    notes = [] if remote else check_data_readonly(spec)
    have, cluster = reachable_cluster(args.address)
    plan = make_plan(spec, have, table, args.autoscaling, cluster)
    plan.notes += [where, *notes, "dry run: nothing started, nothing written"]
    print("\n".join(format_plan(plan)), flush=True)
    return 0
