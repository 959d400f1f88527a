"""The task-family contract, run on every registered family (``study.tasks.FAMILIES``) and,
for in-context regression, on every registered function class: the pattern of Optuna's
storage tests, one suite that every entry passes.  A new family (or function class)
inherits every test below; it only names a tiny config of itself in :data:`TINY`.

Contract: a training batch has the declared shapes and dtypes; batches are a function of
the task seed and the generator only (so a saved generator state resumes the exact data
stream, in a new task as in the old); a member of a pack trains exactly as it would
alone; the memory estimate (``study.memory``) reads the task's real sizes and bounds the
measured peak; evaluation rows are well formed (splits, the family's declared metrics and
condition columns, finite values, the summary metrics the record promises).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from study.config import TASK_POSITION_SCHEMES, TrialConfig, trial_config
from study.errors import ConfigError
from study.memory import check_fits, estimate_trial_memory
from study.tasks import FAMILIES, SPLITS, build_task, family, family_of_metric, summary_metrics
from study.tasks.functions_config import FUNCTION_CLASSES
from study.train import summarize, train, train_pack

ROOT = Path(__file__).resolve().parents[1]
SHORT = [
    "model.n_layer=2",
    "model.dropout=0.0",
    "train.batch_size=8",
    "train.steps=6",
    "train.eval_every=3",
    "train.log_every=3",
    "train.device=cpu",
]
# family -> a tiny config of it (seconds on a CPU); every registered family needs one
TINY: dict[str, list[str]] = {
    "arithmetic": [
        "task.digits=2",
        "task.width=3",
        "task.eval_max_len=3",
        "task.eval_examples=16",
        "task.train_fraction=0.2",
        "task.probes.points=16",
    ],
    "icl": [
        "task.family=icl",
        "task.n_dims=3",
        "task.n_points=6",
        "task.eval_prompts=16",
        "task.baselines=[lstsq, averaging]",
        "task.shifts={x_scale: [2.0]}",
        "task.probes.prompts=16",
    ],
}
# family -> overrides that make its evaluation large (its activations dominate what it allocates)
LARGE_EVALUATION: dict[str, list[str]] = {
    "arithmetic": ["task.eval_examples=500"],
    "icl": ["task.eval_prompts=2000"],
}
# in-context regression: one case per function class (combo draws its two classes)
CASES: dict[str, list[str]] = {name: TINY[name] for name in FAMILIES if name != "icl"} | {
    f"icl:{cls}": TINY["icl"] + [f"task.classes=[{cls}]"] for cls in FUNCTION_CLASSES
}


def tiny(case: str, *extra: str) -> TrialConfig:
    return trial_config({}, CASES[case] + SHORT + list(extra))


def task_of(cfg: TrialConfig, seed: int | None = None):
    mc = cfg.model
    scheme = mc.pos_encoding if mc.pos_encoding in TASK_POSITION_SCHEMES else None
    return build_task(
        cfg.task, seed=cfg.train.seed if seed is None else seed, position_scheme=scheme, max_position=mc.max_position
    )


def batch_tensors(batch) -> list[torch.Tensor | None]:
    return [batch.inputs, batch.targets, batch.mask, batch.positions]


def assert_same_batch(a, b) -> None:
    for x, y in zip(batch_tensors(a), batch_tensors(b)):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x, y)


def test_every_registered_family_has_a_tiny_config_and_a_case():
    assert set(TINY) == set(FAMILIES) == set(LARGE_EVALUATION)
    assert {case.split(":")[0] for case in CASES} == set(FAMILIES)


def test_an_unknown_family_fails_naming_the_known_ones():
    with pytest.raises(ConfigError, match="unknown task family 'quantum'; use one of arithmetic, icl"):
        family("quantum")
    with pytest.raises(ConfigError, match="unknown task family"):
        trial_config({}, ["task.family=quantum"])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_record_is_consistent(name):
    record = FAMILIES[name]
    assert record.name == name and record.config().family == name  # the config's tag is the record's name
    assert record.metrics and set(record.metrics.values()) <= {"max", "min"}
    assert record.primary_metric in record.metrics
    assert all(family_of_metric(metric) is record for metric in record.metrics)  # no metric is claimed twice
    cfg = tiny(next(case for case in CASES if case.split(":")[0] == name)).task
    reported = record.summary_metrics(cfg)
    assert reported and reported <= {f"{split}_{m}" for split in SPLITS for m in record.metrics}
    assert summary_metrics(cfg) == {"loss"} | reported
    assert "the" in record.missing_metric_hint(cfg, "ood_bogus")  # a sentence, whatever the metric
    assert set(record.size_fields) <= set(record.config.model_fields)  # driving_field can name each
    assert set(record.conditions) <= {key for c in cfg.evaluated_conditions() for key in c}


def test_the_report_has_sections_for_every_family():
    from analysis import report

    assert set(report.FAMILY_SECTIONS) == set(FAMILIES)


@pytest.mark.parametrize("case", list(CASES))
def test_a_training_batch_has_the_declared_shapes_and_dtypes(case):
    cfg = tiny(case)
    task = task_of(cfg)
    batch = task.train_batch(8, 0, torch.Generator().manual_seed(0))
    io = task.io
    B, T = batch.mask.shape
    assert B == 8 and 1 <= T <= io.max_seq_len and batch.mask.dtype == torch.bool and batch.mask.any()
    if io.tokens:
        assert batch.inputs.shape == (B, T) and batch.inputs.dtype == torch.long
        assert 0 <= int(batch.inputs.min()) and int(batch.inputs.max()) < io.n_in
    else:
        assert batch.inputs.shape == (B, T, io.n_in) and batch.inputs.is_floating_point()
    assert batch.targets.shape[:2] == (B, T)
    assert batch.positions is None or (batch.positions.shape == (B, T) and batch.positions.dtype == torch.long)
    from study.model import Transformer

    model = Transformer(cfg.model, io, n_members=1, seeds=[0])
    output = model(batch.inputs[None], positions=None if batch.positions is None else batch.positions[None])[0]
    assert output.shape == (B, T, io.n_out)
    loss = task.loss(output, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("case", list(CASES))
def test_batches_are_a_function_of_the_seed_and_the_generator(case):
    cfg = tiny(case)
    one, two = task_of(cfg), task_of(cfg)
    a = [one.train_batch(8, step, torch.Generator().manual_seed(5)) for step in (0, 1)]
    b = [two.train_batch(8, step, torch.Generator().manual_seed(5)) for step in (0, 1)]
    for x, y in zip(a, b):
        assert_same_batch(x, y)
    other = one.train_batch(8, 0, torch.Generator().manual_seed(6))
    assert not torch.equal(other.inputs, a[0].inputs)


@pytest.mark.parametrize("case", list(CASES))
def test_a_saved_generator_state_resumes_the_exact_data_stream(case):
    cfg = tiny(case)
    task, g = task_of(cfg), torch.Generator().manual_seed(3)
    task.train_batch(8, 0, g)
    saved = g.get_state()
    following = task.train_batch(8, 1, g)
    restored = torch.Generator()
    restored.set_state(saved)
    assert_same_batch(task.train_batch(8, 1, restored), following)  # the same task
    restored.set_state(saved)
    assert_same_batch(task_of(cfg).train_batch(8, 1, restored), following)  # a new one, as after a restart


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_packed_member_trains_exactly_as_it_would_alone(case):
    alone = train(tiny(case, "train.seed=1"), trial_id="m1")
    packed = train_pack([tiny(case, "train.seed=0"), tiny(case, "train.seed=1")], ["m0", "m1"])[1]
    assert packed.status == alone.status == "completed" and packed.steps == alone.steps == 6
    assert [{k: v for k, v in r.items() if k != "value"} for r in packed.eval_rows] == [
        {k: v for k, v in r.items() if k != "value"} for r in alone.eval_rows
    ]
    for a, b in zip(packed.eval_rows, alone.eval_rows):
        assert a["value"] == pytest.approx(b["value"], abs=1e-4, nan_ok=True), (a, b)
    assert packed.metrics == pytest.approx(alone.metrics, abs=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_evaluation_rows_are_well_formed(case):
    cfg = tiny(case)
    record = family(cfg.task.family)
    task = task_of(cfg)
    from study.model import Transformer

    model = Transformer(cfg.model, task.io, n_members=1, seeds=[0]).member(0).eval()
    rows = task.evaluate(model)
    assert rows
    others = {c for f in FAMILIES.values() if f is not record for c in f.conditions} - set(record.conditions)
    for row in rows:
        assert row["split"] in SPLITS and row["metric"] in record.metrics, row
        assert set(record.conditions) <= set(row) and not others & set(row), row
        assert isinstance(row["value"], float) and math.isfinite(row["value"]), row
    conditions = {tuple(row[c] for c in record.conditions) for row in rows}
    declared = {tuple(c[k] for k in record.conditions) for c in cfg.task.evaluated_conditions()}
    assert conditions == declared
    assert set(summarize(rows)) | {"loss"} == summary_metrics(cfg.task)  # what the record promises, no more


@pytest.mark.parametrize("case", list(CASES))
def test_the_memory_estimate_reads_the_tasks_real_sizes(case):
    """The sizes the estimate reads (the record's) are the task's: its vocabulary or input
    size, its longest sequence, the conditions it builds."""
    cfg = tiny(case)
    sizes = family(cfg.task.family).sizes(cfg.task, cfg.model.shape[0])
    task = task_of(cfg)
    assert (sizes.n_in, sizes.n_out, sizes.tokens) == (task.io.n_in, task.io.n_out, task.io.tokens)
    assert sizes.sequence >= task.io.max_seq_len
    assert sizes.conditions == len(
        {
            tuple(c[k] for k in family(cfg.task.family).conditions if k != "n_context")
            for c in cfg.task.evaluated_conditions()
        }
    )


class LiveTensors(TorchDispatchMode):
    """Counts the bytes of the tensors created under it that are still alive, and their peak
    (a storage counted once, freed when the tensor that brought it dies)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.sizes = 0, 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in self.sizes:
                key = tensor.untyped_storage().data_ptr()
                self.sizes[key] = tensor.untyped_storage().nbytes()
                self.live += self.sizes[key]
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self.free, key)
        return out

    def free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)


@pytest.mark.parametrize("case", list(CASES))
def test_the_estimate_bounds_the_tensors_an_evaluation_and_its_probes_create(case):
    """An evaluation of a large evaluation set and the probes, at the evaluation batch: the
    tensors alive at once stay within the estimate's evaluation and probe activations (plus
    the weights' term, for per-forward copies of them)."""
    from study.model import Transformer

    cfg = tiny(case, *LARGE_EVALUATION[case.split(":")[0]])
    task = task_of(cfg)
    model = Transformer(cfg.model, task.io, n_members=1, seeds=[0]).member(0).eval()
    counted = LiveTensors()
    with torch.no_grad(), counted:
        task.evaluate(model)
        task.representations(model)
    parts = estimate_trial_memory(cfg).parts
    bound = parts["evaluation activations"] + parts["probe activations"] + parts["weights, gradients and AdamW state"]
    assert counted.peak <= bound, (counted.peak / 2**20, {k: v / 2**20 for k, v in parts.items()})


MEASURE = """
import json, sys
import torch
torch.set_num_threads(1)
from study.config import trial_config
from study.train import train

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

cfg = trial_config({}, json.loads(sys.argv[1]))
start = status("VmRSS")
train(cfg)
print(json.dumps({"peak_growth": status("VmHWM") - start}))
"""


@pytest.mark.slow  # a fresh interpreter per case (torch's import is most of it)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
@pytest.mark.parametrize("case", list(CASES))
def test_the_memory_estimate_bounds_the_measured_peak(case):
    """A fresh process trains the tiny config (two evaluations, the probes included); the
    growth of its resident high-water mark stays below the estimate."""
    overrides = CASES[case] + SHORT
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(overrides)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])["peak_growth"]
    assert measured <= estimate_trial_memory(trial_config({}, overrides)).total


# --------------------------------------------------------------------------- defects found on the way

GIB = 2**30


def test_the_estimate_counts_the_in_context_coefficient_probe():
    """The coefficient probe runs one forward over ``task.probes.prompts`` prompts (512 by
    default, twice the evaluation forward's 256) and keeps the final state of every probe
    prompt; the estimate counted none of it, so a million probe prompts (a forward of
    hundreds of GiB) passed :func:`check_fits`."""
    base = estimate_trial_memory(trial_config({}, ["task.family=icl"]))
    huge = trial_config({}, ["task.family=icl", "task.probes.prompts=1000000"])
    assert estimate_trial_memory(huge).total > base.total + 100 * GIB
    off = trial_config({}, ["task.family=icl", "task.probes.prompts=1000000", "task.probes.enabled=false"])
    assert (
        estimate_trial_memory(off).total
        == estimate_trial_memory(trial_config({}, ["task.family=icl", "task.probes.enabled=false"])).total
    )  # probes off: none of it
    with pytest.raises(ConfigError, match="a trial needs about"):
        check_fits(huge, 64 * GIB, "the available RAM")
    # the default probe's forward (512 prompts) is larger than the evaluation's (256): counted as the larger
    default = trial_config({}, ["task.family=icl"])
    sizes = family("icl").sizes(default.task, default.model.shape[0])
    assert sizes.probe_forward_rows == 512 > sizes.eval_rows == 256
    assert (
        base.parts["evaluation activations"]
        == 2
        * estimate_trial_memory(trial_config({}, ["task.family=icl", "task.probes.enabled=false"])).parts[
            "evaluation activations"
        ]
    )
