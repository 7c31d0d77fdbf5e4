import pytest

from fixmatch_ray.config import ConfigError, RunConfig, load_yaml


def test_defaults_are_the_paper_settings():
    c = RunConfig()
    assert (c.batch_size, c.mu, c.lr, c.wdecay, c.threshold, c.lambda_u, c.ema_decay) == (
        64, 7, 0.03, 5e-4, 0.95, 1.0, 0.999)
    assert c.total_steps == 2**20 and c.eval_step == 1024 and c.nesterov and c.use_ema
    assert c.unlabeled_batch_size == 448


def test_resolved_fills_reference_shapes_and_draws_a_seed():
    r = RunConfig(dataset="cifar100", num_labeled=400).resolved()
    assert (r.depth, r.width) == (28, 8) and isinstance(r.seed, int)
    assert RunConfig(seed=3).resolved().seed == 3
    assert (RunConfig().resolved().depth, RunConfig().resolved().width) == (28, 2)


@pytest.mark.parametrize("data, match", [
    ({"lr ": 0.1}, "unknown key 'lr '"),
    ({"batch_size": "64"}, "batch_size: expected int, got '64'"),
    ({"batch_size": True}, "batch_size: expected int"),
    ({"lr": "fast"}, "lr: expected float"),
    ({"nesterov": 1}, "nesterov: expected bool"),
    ({"dataset": "mnist"}, "dataset: unknown 'mnist'"),
    ({"arch": "vit"}, "arch: unknown 'vit'"),
    ({"num_labeled": -40}, "num_labeled: must be a positive"),
    ({"num_labeled": 45}, "45 is not divisible by the 10 classes"),
    ({"dataset": "cifar100", "num_labeled": 400 * 200}, "asks for 800 labels per class"),
    ({"dataset": "digits", "num_labeled": 1500}, "smallest class"),
    ({"threshold": 1.5}, "threshold: must be in"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"mu": 0}, "mu: must be a positive"),
    ({"amp": "fp8"}, "amp: unknown 'fp8'"),
])
def test_bad_values_are_one_clear_line(data, match):
    with pytest.raises(ConfigError, match=match) as e:
        RunConfig.from_dict(data)
    assert "\n" not in str(e.value)


def test_int_is_a_float_but_not_vice_versa():
    assert RunConfig.from_dict({"lr": 1}).lr == 1
    with pytest.raises(ConfigError, match="total_steps: expected int"):
        RunConfig.from_dict({"total_steps": 1.5})


def test_save_and_load_round_trip(tmp_path):
    c = RunConfig(dataset="digits", num_labeled=20, seed=4).resolved()
    c.save(tmp_path / "config.yaml")
    assert RunConfig.from_yaml(tmp_path / "config.yaml") == c
    assert not [p for p in tmp_path.iterdir() if p.name != "config.yaml"]  # no temp files left


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\nmu: 7\n")
    with pytest.raises(ConfigError, match="malformed YAML at line"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        RunConfig.from_yaml(lst)


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 2, "gpus_per_worker": 0.5}, "DDP ranks each need a whole GPU"),
    ({"gpus_per_worker": 2}, "a worker trains on one GPU"),
    ({"workers": 0}, "workers: expected a positive integer"),
    ({"cpus_per_worker": 0}, "cpus_per_worker: expected a number > 0"),
    ({"custom_per_worker": {"fake_gpu": 0}}, "expected resource name: amount > 0"),
    ({"workers": "2"}, "workers: expected int"),
])
def test_bad_resources_are_one_clear_line(kwargs, match):
    from fixmatch_ray.config import Resources

    with pytest.raises(ConfigError, match=match) as e:
        Resources(**kwargs)
    assert "\n" not in str(e.value)


def test_resources_one_trial_holds():
    from fixmatch_ray.config import Resources

    r = Resources(workers=2, cpus_per_worker=3, gpus_per_worker=1, custom_per_worker={"fake": 0.5})
    assert r.use_gpu and r.per_worker() == {"CPU": 3, "GPU": 1, "fake": 0.5}
    assert r.per_run() == {"CPU": 6, "GPU": 2, "fake": 1.0}
    assert Resources(gpus_per_worker=0.25).per_run() == {"CPU": 1.0, "GPU": 0.25}  # a fraction shares a GPU
    with pytest.raises(ConfigError, match="batch_size = 64 is not divisible by 3 DDP workers"):
        Resources(workers=3).check(RunConfig())


def test_train_flags_are_generated_from_the_config_fields():
    """Every run-config field has a flag with the reference's name and its help."""
    from fixmatch_ray.train import build_parser

    p = build_parser()
    flags = {s for a in p._actions for s in a.option_strings}
    assert {"--num-labeled", "--no-download", "--T", "--lambda-u", "--nesterov", "--no-nesterov", "--use-ema",
            "--expand-labels", "--algorithm", "--policy", "--aug-backend", "--amp"} <= flags
    ns = p.parse_args(["--num-labeled", "250", "--no-nesterov", "--amp", "--no-download"])
    assert vars(ns) == {"num_labeled": 250, "nesterov": False, "amp": "auto", "download": False}
    import dataclasses

    helped = {f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("help")}
    assert helped == {f.name for f in dataclasses.fields(RunConfig)}  # no field without its flag
