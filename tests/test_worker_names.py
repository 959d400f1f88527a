"""A study's trial workers carry their grid point where Ray shows an actor's name: the
dashboard's Actors page and the prefix of each worker log line (the actor's repr)."""

from __future__ import annotations

import pytest

from study.config import SweepSpec
from study.tune.runner import run_sweep
from study.tune.trial import named_trainable, run_trial, worker_label

TINY_BASE = {
    "task": {"digits": 1, "width": 3, "eval_max_len": 3, "eval_examples": 16, "train_fraction": 0.3},
    "model": {"size": "nano", "n_layer": 1},
    "train": {"steps": 10, "eval_every": 10, "batch_size": 8, "log_every": 10},
}


def test_the_worker_label_names_study_grid_point_and_pack():
    single = {"study": "qs", "cell": "task.digits=2|train.seed=0", "members": [{}]}
    assert worker_label(single) == "qs task.digits=2|train.seed=0"
    assert worker_label({"study": "qs", "cell": "task.digits=2", "members": [{}, {}, {}]}) == "qs task.digits=2 x3"
    assert worker_label({}) == "trial all"  # before Tune hands it a config


def test_the_trainable_defines_its_own_repr_as_ray_requires():
    # Ray takes an actor's repr as its name only when the class itself defines __repr__
    trainable = named_trainable(run_trial)
    assert "__repr__" in trainable.__dict__ and trainable.__name__ == "StudyTrial"


def _repr_names() -> dict[str, str]:
    """repr name by actor class, from the GCS actor table (what the dashboard lists)."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()
    names: dict[str, list[str]] = {}
    for raw in accessor.get_actor_table(None, None):
        actor = gcs_pb2.ActorTableData.FromString(raw)
        names.setdefault(actor.class_name, []).append(actor.repr_name)
    assert ray.is_initialized()
    return names


@pytest.mark.slow
def test_a_sweeps_workers_are_named_by_their_grid_point_on_ray(tmp_path, ray_local):
    spec = SweepSpec.model_validate(
        {
            "name": "named",
            "base": TINY_BASE,
            "grid": {"task.digits": [1, 2]},
            "tune": {"metric": "id_exact_match", "mode": "max", "trials_per_grid_point": 1},
            "resources": {"cpus": 1},
            "store": str(tmp_path / "store"),
        }
    )
    run_sweep(spec)
    names = _repr_names().get("StudyTrial", [])
    assert {"named task.digits=1", "named task.digits=2"} <= set(names), names
