"""Every place the package leans on Ray beyond its public API, checked against the installed Ray.

Private APIs (four touchpoints, each in one function with a fallback):
1. ``launch/quiet.py:_wrap_deduplicators``: ``ray._private.worker.{stdout,stderr}_deduplicator``;
2. ``launch/quiet.py:PRIVATE_LOGGERS``: loggers of Ray's private modules, by name;
3. ``launch/cluster.py:_token_refused``: ``ray._raylet.GcsClient``;
4. ``launch/worker.py:persister``: ``get_context().get_storage().persist_current_checkpoint``
   (a DeveloperAPI).

Undocumented behaviour of public Ray, matched in one place each: the ``ray start`` address file
(``cluster.recorded_address_file``), Tune's SIGUSR1 handler (``interrupt.stop_tune``), Tune's
message texts and ``RAY_AIR_NEW_OUTPUT`` (``quiet.TUNE_NOTICES``, ``quiet.quiet_output``), the
class name of Ray Train's start-up timeout inside the public ``ControllerError.controller_failure``
(``train_job.unschedulable``, matched by name, never imported).

A Ray upgrade that moves one of them fails here, loudly, instead of silently printing more,
joining slower or stopping less gracefully. No Ray instance is started.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest

from fixmatch_ray.launch import quiet


def test_the_drivers_log_deduplicators():
    from ray._private import worker

    for name in ("stdout_deduplicator", "stderr_deduplicator"):
        assert callable(getattr(getattr(worker, name, None), "deduplicate", None)), f"ray._private.worker.{name}"


def test_the_private_loggers_and_the_texts_the_quiet_filters_match():
    for module in quiet.PRIVATE_LOGGERS:
        assert importlib.util.find_spec(module) is not None, f"{module}: no such module in this Ray"
    assert quiet.AUTH_ENABLED_NOTICE in inspect.getsource(importlib.import_module(quiet.AUTH_LOGGER))
    train_context = importlib.import_module(quiet.TRAIN_CONTEXT_MODULE)
    assert "logging.getLogger(__file__)" in inspect.getsource(train_context)  # why it is silenced by its path
    assert importlib.util.find_spec(quiet.TRAIN_CONTEXT_MODULE).origin == train_context.__file__
    for logger, fragments in quiet.TUNE_NOTICES:
        source = inspect.getsource(importlib.import_module(logger))
        assert all(f in source for f in fragments), (logger, [f for f in fragments if f not in source])
    output = inspect.getsource(importlib.import_module("ray.tune.experimental.output"))
    assert '"RAY_AIR_NEW_OUTPUT", "1") == "0"' in output  # the classic console, which verbose=0 keeps silent
    assert "RAY_DEDUP_LOGS_SKIP_REGEX" in inspect.getsource(importlib.import_module("ray._private.ray_constants"))


def test_the_gcs_client_the_join_check_asks():
    """``cluster._token_refused`` builds ``GcsClient(address=...)`` as Ray's own start-up does (a
    compiled class: its signature is not inspectable, Ray's own call is the evidence)."""
    import ray._raylet
    from ray._private import services
    from ray.exceptions import AuthenticationError

    assert isinstance(ray._raylet.GcsClient, type) and issubclass(AuthenticationError, Exception)
    assert "GcsClient(address=gcs_address" in inspect.getsource(services)


def test_the_checkpoint_copy_ray_train_makes():
    from ray.train.v2._internal.execution.storage import StorageContext
    from ray.train.v2.api.context import TrainContext

    assert callable(getattr(TrainContext, "get_storage", None))
    assert list(inspect.signature(StorageContext.persist_current_checkpoint).parameters) == [
        "self", "checkpoint", "checkpoint_dir_name"]


@pytest.mark.parametrize("env", [{"RAY_TMPDIR": "/r"}, {"RAY_TMPDIR": "", "TMPDIR": "/t"}, {"TMPDIR": "/t"}, {}])
def test_the_recorded_cluster_file_is_where_ray_puts_it(monkeypatch, env):
    """The dry run finds a `ray start` cluster without importing Ray, by Ray's rule written out."""
    from ray._common.utils import get_ray_address_file

    from fixmatch_ray.launch.cluster import recorded_address_file

    for key in ("RAY_TMPDIR", "TMPDIR"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert str(recorded_address_file()) == get_ray_address_file(None)


def test_tune_stops_gracefully_on_sigusr1_while_it_runs():
    """``interrupt.stop_tune`` raises SIGUSR1: Tune's run installs its graceful-stop handler there."""
    from ray.tune import tune

    catching = inspect.getsource(tune._setup_signal_catching)
    assert "signal.signal(signal.SIGUSR1, signal_interrupt_tune_run)" in catching
    assert "_setup_signal_catching()" in inspect.getsource(tune.run)


def test_the_start_up_timeout_a_run_that_is_never_placed_fails_with():
    """``train_job.unschedulable`` recognises it by class name, inside the public ControllerError."""
    from ray.train import ControllerError
    from ray.train.v2._internal import exceptions

    from fixmatch_ray.launch import worker

    assert issubclass(exceptions.WorkerGroupStartupTimeoutError, Exception)
    assert "controller_failure" in inspect.signature(ControllerError).parameters
    assert worker.START_TIMEOUT_ENV in inspect.getsource(importlib.import_module("ray.train.v2._internal.constants"))
