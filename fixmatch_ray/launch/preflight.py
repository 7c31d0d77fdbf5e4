"""Every check a sweep makes before it starts, each written once; ``--dry-run`` runs the same ones.

The sweep (:mod:`.sweep`) runs them in order: the ``tracking:`` block, the storage location, the
experiment's lease, each dataset (when this machine runs the trials), the cluster's capacity and
a resume from another sweep file. ``dry_run=True`` makes each only read: the nearest existing
directory of a local storage path must be writable (no probe file), the lease is peeked at (not
taken), a dataset must be present or downloadable (nothing downloaded), no ``sweep.yaml`` is
written and no experiment moved aside, and the cluster's resources are read only when a cluster
is reachable (``--address``, ``$RAY_ADDRESS``, or a live cluster ``ray start`` recorded here): no
local Ray is started for a plan, and without a cluster Ray is not even imported. The one check a
dry run cannot make without Ray: that an earlier experiment holds Tune's state (the sweep asks Tune).

:func:`dry_run` is ``sweep FILE --dry-run``. No Ray import here (:mod:`.cluster` and :mod:`.tuner`
import it, when called).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import ConfigError, DataError
from ..storage import Store, internal_file, is_uri, local_path, normalize_storage
from ..storage.layout import LEASE_FILE, SWEEP_FILE
from ..tracking import check_tracking
from .cluster import recorded_address_file
from .lease import Lease
from .plan import DEFAULTS, StepTimes, cluster_line, format_plan, load_step_times, make_plan, trials_at_once

if TYPE_CHECKING:
    from ..config import SweepSpec
    from .interrupt import Interrupts


def resolve_paths(spec: "SweepSpec") -> "SweepSpec":
    """Trials run in other working directories: local storage and data paths become absolute."""
    trials = tuple(
        dataclasses.replace(t, run=t.run.replace(data_dir=os.path.abspath(local_path(t.run.data_dir))))
        if not is_uri(t.run.data_dir) else t for t in spec.trials
    )
    return dataclasses.replace(spec, storage=normalize_storage(spec.storage), trials=trials)


def step_times(path: str | None) -> StepTimes:
    """``--step-times FILE``'s table, else the built-in estimates."""
    return load_step_times(path) if path else DEFAULTS


def joins_cluster(address: str | None) -> bool:
    """Whether the sweep joins a cluster named by ``--address`` or ``$RAY_ADDRESS`` (its trials may
    then run on other machines, which read their own data)."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def _unwritable(storage: str, why: str) -> ConfigError:
    return ConfigError(f"storage: cannot write to {storage!r} ({why}); choose a writable path")


def check_storage(storage: str, dry_run: bool = False) -> None:
    """The storage location can be written: a URI must open (pyarrow); a local path's nearest
    existing directory must be writable, and the sweep (not a dry run) then creates the path and
    probes it with a file (a read-only filesystem, a full disk)."""
    if is_uri(storage):
        Store(storage)  # pyarrow opens it: a malformed URI or unknown scheme is a StorageError line
        return
    path = Path(storage)
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise _unwritable(storage, f"{path} is not a writable directory")
    if dry_run:
        return
    try:
        Path(storage).mkdir(parents=True, exist_ok=True)
        probe = Path(storage) / f".fixmatch_write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise _unwritable(storage, str(e.strerror or e)) from None


def check_data(spec: "SweepSpec", dry_run: bool = False) -> list[str]:
    """Each dataset the trials read, loaded once (downloaded first where allowed): a missing dataset
    is one line here instead of failing every trial. A dry run downloads nothing: one note per
    dataset the sweep would download. A folder dataset is decoded into its cache once here, at the
    trials' ``image_size`` (a dry run only lists its files: it writes nothing)."""
    from ..data.datasets import check_dataset

    notes = []
    runs = {(t.run.dataset, t.run.data_dir, t.run.download, t.run.image_size) for t in spec.trials}
    for name, root, download, image_size in sorted(runs, key=repr):
        try:
            check_dataset(name, root, download and not dry_run, image_size, decode=not dry_run)
        except DataError as e:
            if not (dry_run and download):
                raise ConfigError(str(e)) from None
            notes.append(f"{name} is not in {root}: the sweep downloads it first")
    return notes


def take_lease(experiment: str, interrupts: "Interrupts") -> Lease:
    """The experiment's lease (one live driver per experiment), or :class:`.lease.LeaseHeld`.
    Losing it later (another driver judged this one dead) stops the sweep like an interrupt."""
    lease = Lease(Store(experiment), LEASE_FILE, on_lost=lambda message: interrupts.stop())
    notice = lease.acquire()
    if notice:
        print(notice, file=sys.stderr, flush=True)
    return lease


def peek_lease(experiment: str) -> str:
    """The dry run's :func:`take_lease`: a live driver is the same :class:`.lease.LeaseHeld`; a dead
    one's lease is a note (it would be taken over)."""
    reason = Lease(Store(experiment), LEASE_FILE).peek()
    return f"; its lease would be taken over: the previous driver {reason}" if reason else ""


def release_lease(lease: Lease, experiment: str) -> None:
    """Release the lease; an experiment directory left empty (a sweep refused before it wrote
    anything) is removed, so nothing half-made stays behind."""
    lease.release()
    if is_uri(experiment):
        return
    path = Path(experiment)
    with contextlib.suppress(OSError):
        if all(_lease_file(p.name) for p in path.iterdir()):  # only the local lease's lock file is left
            shutil.rmtree(path)


def _lease_file(name: str) -> bool:
    """The lease and the lock file its local conditional writes keep beside it."""
    return name == LEASE_FILE or internal_file(name)


def _earlier_experiment(experiment: str) -> bool:
    """Whether ``experiment`` holds anything but this driver's lease."""
    if is_uri(experiment):
        store = Store(experiment)
        return any(not _lease_file(name) for name in store.list(recursive=False)) or bool(store.subdirs())
    path = Path(experiment)
    return path.is_dir() and any(not _lease_file(p.name) for p in path.iterdir())


def _check_fresh(experiment: str) -> None:
    if is_uri(experiment):
        raise ConfigError(f"--fresh: move {experiment} aside yourself (remote storage) or use another name")


def _check_same_sweep_file(experiment: str, sweep_file: str) -> None:
    old = Store(experiment).read_text(SWEEP_FILE)
    if old is not None and old != Path(sweep_file).read_text(encoding="utf-8"):
        raise ConfigError(
            f"{sweep_file} differs from the one {experiment} was started with; resume with the "
            f"same file, or pass --fresh (the old experiment is moved aside) or another --name"
        )


def prepare_experiment(spec: "SweepSpec", sweep_file: str, fresh: bool) -> bool:
    """Check the experiment directory; True when an earlier run of it is to be resumed.

    A resumed experiment must come from the same sweep file (same trials); ``--fresh`` moves
    the old experiment aside (nothing is deleted) and starts again.
    """
    from .tuner import experiment_exists

    experiment = spec.experiment_path()
    if _earlier_experiment(experiment) and fresh:
        _check_fresh(experiment)
        aside = Path(f"{experiment}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.mkdir()
        for child in Path(experiment).iterdir():  # everything but our lease, which stays held
            if not _lease_file(child.name):
                shutil.move(child, aside / child.name)
        print(f"moved the earlier experiment to {aside}", file=sys.stderr)
    elif _earlier_experiment(experiment):
        if not experiment_exists(experiment):
            raise ConfigError(f"{experiment} exists but holds no Tune experiment; use --fresh or another name")
        _check_same_sweep_file(experiment, sweep_file)
        return True
    Store(experiment).write_bytes(SWEEP_FILE, Path(sweep_file).read_text(encoding="utf-8").encode())
    return False


def experiment_note(spec: "SweepSpec", sweep_file: str, fresh: bool) -> str:
    """The dry run's :func:`prepare_experiment`: what the sweep would do with ``<storage>/<name>``."""
    experiment = spec.experiment_path()
    if not _earlier_experiment(experiment):
        return f"new experiment {experiment}"
    if fresh:
        _check_fresh(experiment)
        return f"--fresh: the earlier {experiment} would be moved aside"
    _check_same_sweep_file(experiment, sweep_file)
    return f"resumes {experiment} (finished trials are not rerun)"


def read_cluster(address: str | None, spec: "SweepSpec", dry_run: bool = False) -> tuple[Mapping[str, float] | None, str]:
    """The resources of the cluster the trials run on, read once per sweep, and the plan's line
    saying which. The sweep joins ``address`` (or ``$RAY_ADDRESS``, or a live ``ray start``
    cluster) or starts a local Ray; a dry run reads one only when one is reachable, else returns
    (None, why) without importing Ray."""
    if not dry_run:
        from .cluster import cluster_resources, ensure_ray

        r = spec.resources
        ensure_ray(address, min_cpus=r.workers * r.cpus_per_worker)
        have = cluster_resources()
        return have, cluster_line("the cluster", have)
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


def check_capacity(spec: "SweepSpec", have: Mapping[str, float] | None, autoscaling: bool) -> int:
    """How many trials the cluster can run at once; a request it cannot meet is a ConfigError
    (unless ``autoscaling``). No cluster to read (a dry run): the file's own request is assumed,
    ``max_concurrent_trials`` trials at once, else one."""
    if have is None:
        return spec.max_concurrent_trials or 1
    return trials_at_once(spec.resources, have, autoscaling)


def dry_run(spec: "SweepSpec", args: argparse.Namespace) -> int:
    """Every check the sweep would make, reading only, then its plan: write nothing, start nothing."""
    table = step_times(args.step_times)
    check_tracking(spec.tracking)
    check_storage(spec.storage, dry_run=True)
    held = peek_lease(spec.experiment_path())
    where = experiment_note(spec, args.sweep_file, args.fresh) + held
    notes = [] if joins_cluster(args.address) else check_data(spec, dry_run=True)
    have, cluster = read_cluster(args.address, spec, dry_run=True)
    plan = make_plan(spec, check_capacity(spec, have, args.autoscaling), table, cluster, have, args.card)
    plan.notes += [where, *notes, "dry run: nothing started, nothing written"]
    print("\n".join(format_plan(plan)), flush=True)
    return 0
