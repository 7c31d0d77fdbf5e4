import pytest

from fixmatch_ray.config import ConfigError, RunConfig, load_yaml


def test_defaults_are_the_paper_settings():
    c = RunConfig()
    assert (c.batch_size, c.mu, c.lr, c.wdecay, c.options.threshold, c.options.lambda_u, c.ema_decay) == (
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
    assert helped == {f.name for f in dataclasses.fields(RunConfig)} - {"options"}  # no key without its flag


# -- the official ablations' knobs ----------------------------------------------------------------
@pytest.mark.parametrize("data, match", [
    ({"pseudo_label": "fuzzy"}, "pseudo_label: unknown 'fuzzy'; expected one of hard, soft"),
    ({"teacher": "student"}, "teacher: unknown 'student'"),
    ({"teacher": "ema", "use_ema": False}, "teacher: ema takes pseudo-labels from the EMA model; it needs use_ema"),
    ({"algorithm": "flexmatch", "pseudo_label": "soft"}, "'pseudo_label' is an option of fixmatch, not of "
                                                         "algorithm flexmatch; valid keys: T, algorithm"),
    ({"algorithm": "flexmatch", "teacher": "ema"}, "'teacher' is an option of fixmatch, not of algorithm flexmatch"),
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
    assert (c.options.pseudo_label, c.options.teacher, c.strong_aug, c.options.anchoring, c.optimizer,
            c.lr_schedule) == ("hard", "model", "full", "weak.strong", "sgd", "cosine")
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
    assert (c.options.pseudo_label, c.options.teacher, c.strong_aug, c.options.anchoring, c.optimizer, c.beta2,
            c.lr_schedule, c.lr_end, c.split_seed) == ("soft", "ema", "cutout_only", "strong.strong", "adam", 0.0,
                                                       "linear", 0.002, 3)


# -- the algorithm's own options: keys of the run config's mapping, owned by the algorithm -----------
def test_algorithm_options_are_keys_of_the_run_config_and_come_back_in_its_dict():
    from fixmatch_ray.algorithms import FixMatch, FlexMatch

    c = RunConfig.from_dict({"algorithm": "flexmatch", "threshold": 0.8, "flex_mapping": "linear"})
    assert c.options == FlexMatch.Options(threshold=0.8, flex_mapping="linear")
    d = c.to_dict()
    # every option with its resolved value, right after the algorithm, and nothing of FixMatch's own
    keys = list(d)
    assert keys[keys.index("algorithm"):keys.index("algorithm") + 7] == [
        "algorithm", "lambda_u", "T", "threshold", "anchoring", "flex_warmup", "flex_mapping"]
    assert (d["threshold"], d["flex_mapping"], d["flex_warmup"], d["lambda_u"]) == (0.8, "linear", True, 1.0)
    assert "pseudo_label" not in d and "options" not in d
    assert RunConfig.from_dict(d) == c  # the record's config re-creates the run
    # defaults are written once, in the algorithm's Options
    assert {k: RunConfig().to_dict()[k] for k in ("threshold", "lambda_u", "T", "pseudo_label")} == {
        "threshold": FixMatch.Options.threshold, "lambda_u": FixMatch.Options.lambda_u, "T": FixMatch.Options.T,
        "pseudo_label": FixMatch.Options.pseudo_label}


def test_replace_changes_options_and_keeps_the_shared_ones_across_algorithms():
    c = RunConfig.from_dict({"threshold": 0.7, "teacher": "ema"})
    assert c.replace(threshold=0.9).options.threshold == 0.9 and c.replace(lr=0.1).options == c.options
    flex = RunConfig.from_dict({"threshold": 0.7}).replace(algorithm="flexmatch")
    assert flex.options.threshold == 0.7 and flex.options.flex_mapping == "convex"
    with pytest.raises(ConfigError, match="threshold: must be in"):
        c.replace(threshold=2.0)


def test_a_key_neither_knows_lists_the_run_configs_and_the_algorithms():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"algorithm": "flexmatch", "tau": 0.9}, where="flags")
    message = str(e.value)
    assert message.startswith("flags: unknown key 'tau'; valid keys: ") and "\n" not in message
    valid = message.split("valid keys: ")[1].split(", ")
    assert {"lr", "batch_size", "threshold", "flex_mapping", "flex_warmup"} <= set(valid)
    assert "pseudo_label" not in valid  # FixMatch's, not FlexMatch's


def test_algorithm_option_flags_reach_its_options():
    from fixmatch_ray.train import build_parser

    ns = build_parser().parse_args(["--algorithm", "flexmatch", "--threshold", "0.9", "--lambda-u", "2",
                                    "--T", "0.5", "--no-flex-warmup", "--flex-mapping", "concave"])
    c = RunConfig.from_dict(vars(ns))
    assert (c.options.threshold, c.options.lambda_u, c.options.T, c.options.flex_warmup,
            c.options.flex_mapping) == (0.9, 2.0, 0.5, False, "concave")
    with pytest.raises(ConfigError, match="'flex_mapping' is an option of flexmatch, not of algorithm fixmatch"):
        RunConfig.from_dict(vars(build_parser().parse_args(["--flex-mapping", "linear"])))


# -- policies declare their backends -----------------------------------------------------------------
@pytest.fixture
def one_backend_policies(monkeypatch):
    """A PIL-only and a tensor-only policy, registered for the test."""
    from fixmatch_ray.data.policies import POLICIES, Policy

    class PilOnly(Policy):
        name, backends = "pil_only", frozenset({"pil"})

    class TensorOnly(Policy):
        name, backends = "tensor_only", frozenset({"tensor"})

    for cls in (PilOnly, TensorOnly):
        monkeypatch.setitem(POLICIES.builtins, cls.name, cls)
    POLICIES.reload()
    yield
    monkeypatch.undo()
    POLICIES.reload()


def test_auto_picks_a_backend_the_policy_declares(one_backend_policies):
    pil, tensor = RunConfig(policy="pil_only"), RunConfig(policy="tensor_only")
    assert (pil.aug_backend_for("cuda"), pil.aug_backend_for("cpu")) == ("pil", "pil")
    assert (tensor.aug_backend_for("cuda"), tensor.aug_backend_for("cpu")) == ("tensor", "tensor")
    assert (RunConfig().aug_backend_for("cuda"), RunConfig().aug_backend_for("cpu")) == ("tensor", "pil")


@pytest.mark.parametrize("policy, backend, other", [("pil_only", "tensor", "pil"), ("tensor_only", "pil", "tensor")])
def test_a_backend_the_policy_lacks_is_refused_at_config_time(one_backend_policies, policy, backend, other):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"policy": policy, "aug_backend": backend})
    assert str(e.value) == (f"aug_backend: policy {policy} does not implement the {backend} backend; "
                            f"use aug_backend: auto or {other}")
