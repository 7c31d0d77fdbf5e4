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
    ({"num_labeled": 50_001}, "cifar10 spreads labels .* must be 1..50000 \\(its training images\\), got 50001"),
    ({"dataset": "cifar100", "num_labeled": 400 * 200}, "must be 1..50000 \\(its training images\\), got 80000"),
    ({"dataset": "digits", "num_labeled": 1500}, "must be 1..1433"),
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


# -- the official ablations' knobs ----------------------------------------------------------------
@pytest.mark.parametrize("data, match", [
    ({"pseudo_label": "fuzzy"}, "pseudo_label: unknown 'fuzzy'; expected one of hard, soft"),
    ({"teacher": "student"}, "teacher: unknown 'student'"),
    ({"teacher": "ema", "use_ema": False}, "teacher: ema takes pseudo-labels from the EMA model; it needs use_ema"),
    ({"algorithm": "flexmatch", "pseudo_label": "soft"}, "pseudo_label: soft is a FixMatch ablation"),
    ({"algorithm": "flexmatch", "teacher": "ema"}, "teacher: ema is a FixMatch ablation"),
    ({"strong_aug": "no_ops"}, "strong_aug: unknown 'no_ops'; expected one of full, no_cutout, cutout_only"),
    ({"anchoring": "strong"}, "anchoring: unknown 'strong'"),
    ({"optimizer": "rmsprop"}, "optimizer: unknown 'rmsprop'; expected one of sgd, adam"),
    ({"beta1": 0.9}, "beta1: only used by optimizer: adam"),
    ({"optimizer": "adam", "beta2": 1.0}, r"beta2: must be in \[0, 1\), got 1.0"),
    ({"optimizer": "adam", "beta1": "0.9"}, "beta1: expected float or null, got '0.9'"),
    ({"lr_schedule": "step"}, "lr_schedule: unknown 'step'; expected one of cosine, linear"),
    ({"lr_end": 0.0}, "lr_end: only used by lr_schedule: linear"),
    ({"lr_schedule": "linear", "lr_end": -0.1}, "lr_end: must be >= 0"),
    ({"momentum": 0.0}, "nesterov: Nesterov momentum needs momentum > 0; set nesterov: false"),
    ({"split_seed": -1}, "split_seed: must be >= 0"),
])
def test_ablation_knobs_refuse_bad_values_in_one_line(data, match):
    with pytest.raises(ConfigError, match=match) as e:
        RunConfig.from_dict(data)
    assert "\n" not in str(e.value)


def test_ablation_knobs_defaults_and_resolution():
    c = RunConfig()
    assert (c.pseudo_label, c.teacher, c.strong_aug, c.anchoring, c.optimizer, c.lr_schedule) == (
        "hard", "model", "full", "weak.strong", "sgd", "cosine")
    assert (c.beta1, c.beta2, c.lr_end, c.split_seed) == (None, None, None, None)
    assert RunConfig(seed=5).labeled_split_seed == 5 and RunConfig(seed=5, split_seed=3).labeled_split_seed == 3
    adam = RunConfig(optimizer="adam", beta2=0.0).resolved()
    assert (adam.beta1, adam.beta2) == (0.9, 0.0)  # filled where not given, kept where given
    assert RunConfig(lr_schedule="linear").resolved().lr_end == 0.02  # ab_fixmatch_linearlr's default
    assert RunConfig(momentum=0.0, nesterov=False).momentum == 0.0  # plain SGD is fine


def test_ablation_flags_reach_the_config():
    from fixmatch_ray.train import build_parser

    ns = build_parser().parse_args(["--pseudo-label", "soft", "--teacher", "ema", "--strong-aug", "cutout_only",
                                    "--anchoring", "strong.strong", "--optimizer", "adam", "--beta2", "0",
                                    "--lr-schedule", "linear", "--lr-end", "0.002", "--split-seed", "3"])
    c = RunConfig.from_dict(vars(ns))
    assert (c.pseudo_label, c.teacher, c.strong_aug, c.anchoring, c.optimizer, c.beta2, c.lr_schedule, c.lr_end,
            c.split_seed) == ("soft", "ema", "cutout_only", "strong.strong", "adam", 0.0, "linear", 0.002, 3)
