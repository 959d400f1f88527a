"""A bad trial config is refused before any work, with one message naming the field."""

import pytest

from study.config import ConfigError, SweepSpec, load_trial_config, trial_config


def error_for(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        trial_config(overrides=list(overrides))
    return str(info.value)


def test_defaults_are_the_nano_three_digit_addition_setup():
    cfg = trial_config()
    assert (cfg.task.family, cfg.task.op, cfg.task.digits, cfg.task.width) == ("arithmetic", "add", 3, 5)
    assert cfg.task.pad and cfg.task.reverse and cfg.task.train_fraction == 0.01
    assert cfg.model.shape == (3, 3, 48)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.weight_decay, cfg.train.grad_clip) == (5e-4, 64, 0.1, 1.0)


def test_overrides_are_parsed_like_yaml():
    cfg = trial_config(overrides=["model.size=micro", "train.lr=1e-3", "task.modulus=101", "model.pos_encoding=rope"])
    assert cfg.model.shape == (4, 4, 128) and cfg.train.lr == 1e-3 and cfg.task.modulus == 101
    assert cfg.model.pos_encoding == "rope"


def test_switching_family_gives_that_family_defaults():
    cfg = trial_config(overrides=["task.family=icl", "task.classes=[linear, sparse_linear]", "task.mix_weight=0.3"])
    assert cfg.task.n_dims == 20 and cfg.task.weights == [0.3, 0.7]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["task.digts=3"], "task.digts: unknown key; did you mean task.digits?"),
        (["train.steps=many"], "train.steps"),
        (["model.n_head=5"], "model.n_head=5 does not divide model.d_model=48"),
        (["task.digits=7"], "raise task.width to at least 7"),
        (["task.eval_max_len=9"], "task.eval_max_len=9"),
        (["task.modulus=1"], "task.modulus"),
        (["task.family=icl", "task.nnz=30"], "task.nnz=30 exceeds task.n_dims=20"),
        (["task.family=icl", "task.mix_weight=0.5"], "task.mix_weight needs exactly two task.classes"),
        (["task.family=quantum"], "unknown task family"),
        (["model.size=huge"], "model.size"),
        (["task.mix_weight=0.2"], "task.mix_weight > 0 needs task.mix_digits"),
        (["model.n_head=4", "model.d_model=12", "model.pos_encoding=rope"], "even head size"),
        (["task.train_fraction=0.6"], "more than half of the 1000000 possible pairs"),
        (["task.op=mul", "task.digits=10", "task.width=10"], "gives products beyond int64"),
        (["train.eval_every=500", "train.checkpoint_every=300"], "not a multiple of train.eval_every=500"),
        (["task.probes.positions=[0, 4]"], "task.probes.positions: 4 is not an answer digit"),
        (["task.probes.positions=[-1]"], "have digits 0..3 (0 = units)"),
        (["task.probes.every=300"], "task.probes.every=300 is not a multiple of train.eval_every=500"),
        (["task.probes.pionts=10"], "task.probes.pionts: unknown key; did you mean task.probes.points?"),
        (["task.family=icl", "task.probes.positions=[0]"], "task.probes.positions: unknown key"),
        (["task.family=icl", "task.classes=[sine]", "task.probes.enabled=true"], "trains no linear class"),
    ],
)
def test_bad_input_names_the_field(overrides, expected):
    assert expected in error_for(*overrides)


def test_error_lists_every_bad_field_once():
    message = error_for("train.steps=x", "train.batch_size=y")
    assert message.count("train.steps") == 1 and message.count("train.batch_size") == 1


def test_yaml_file_and_sweep_base(tmp_path):
    trial = tmp_path / "trial.yaml"
    trial.write_text("task: {op: mul, digits: 2}\nmodel: {size: mini}\n")
    cfg = load_trial_config(trial, ["train.seed=7"])
    assert cfg.task.op == "mul" and cfg.model.size == "mini" and cfg.train.seed == 7
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\nbase:\n  task: {digits: 4}\n")
    assert load_trial_config(sweep).task.digits == 4
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such file"):
        load_trial_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_trial_config(bad)


def test_each_metric_direction_comes_from_its_task_family():
    from study.tasks import FAMILIES, metric_direction

    assert set(FAMILIES) == {"arithmetic", "icl"}
    assert metric_direction("loss") == "min"
    assert metric_direction("id_nmse_knn") == metric_direction("nmse") == "min"
    assert metric_direction("ood_exact_match") == metric_direction("equivalence") == "max"
    assert metric_direction("id_bogus") is None


def test_tuned_axes_are_dotted_keys_in_set_overrides():
    """``--set tune.params.train.lr...``: the axis is the longest trial key the override
    starts with (``train.lr``), what follows it a field of its distribution."""
    from pathlib import Path

    from study.config import _tuned_key, load_sweep_spec

    quickstart = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"
    assert _tuned_key("train.lr") == ("train.lr", "")
    assert _tuned_key("train.lr.low") == ("train.lr", "low")
    assert _tuned_key("train.lrr.low") == ("train.lrr", "low")  # no known key: the distribution field still splits
    assert _tuned_key("model.n_head.choices") == ("model.n_head", "choices")
    spec = load_sweep_spec(quickstart, ["tune.params.train.lr={type: loguniform, low: 0.01, high: 0.1}"])
    assert list(spec.tune.params) == ["train.lr"] and spec.tune.params["train.lr"].low == 0.01
    spec = load_sweep_spec(
        quickstart,
        ["tune.params.train.lr.high=0.01", "tune.params.train.weight_decay={type: uniform, low: 0.0, high: 0.2}"],
    )
    assert spec.tune.params["train.lr"].high == 0.01 and spec.tune.params["train.lr"].low == 1e-3  # the file's low kept
    assert set(spec.tune.params) == {"train.lr", "train.weight_decay"}


def test_messages_name_a_field_once_and_hint_at_case():
    assert "invalid trial config: task.eval_lengths=[0, 3] holds" in error_for("task.eval_lengths=[0, 3]")
    assert "did you mean 'micro'? (values are case-sensitive)" in error_for("model.size=MICRO")
    assert "did you mean 'micro'?" in error_for("model.size=mikro")
    with pytest.raises(ConfigError, match="the key is empty; write --set dotted.key=value"):
        trial_config(overrides=[" =5"])
    with pytest.raises(ConfigError, match="has an empty part"):
        trial_config(overrides=["train..steps=5"])


def test_a_trial_runs_one_torch_thread_unless_the_spec_asks_within_its_cpus():
    from study.tune.plan import trial_threads

    spec = SweepSpec.model_validate({"name": "t", "resources": {"cpus": 2}})
    assert spec.resources.threads == 1 and trial_threads(spec) == 1  # bench/threads.py: more trials beat threads
    both = SweepSpec.model_validate({"name": "t", "resources": {"cpus": 2, "threads": 2}})
    assert trial_threads(both) == 2
    with pytest.raises(ValueError, match=r"resources.threads=2 is more than the resources.cpus=1 Ray reserves"):
        SweepSpec.model_validate({"name": "t", "resources": {"cpus": 1, "threads": 2}})
    SweepSpec.model_validate({"name": "t", "resources": {"cpus": 0.5, "threads": 1}})  # a fraction of a core: one
