"""Every reproduction spec in search_spaces/reproduce/ loads, validates its trials and its
claims (no training): a spec that drifts from the config is caught here, not by a run.

Each finding has a published-size spec and, where one was found, a ``_cpu.yaml`` cut that
states its measured time and claim lines in its header.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from study.config import load_sweep_spec

REPRODUCE = Path(__file__).resolve().parents[1] / "search_spaces" / "reproduce"
SPECS = sorted(REPRODUCE.glob("*.yaml"))


def test_the_folder_holds_specs():
    assert SPECS, f"no specs in {REPRODUCE}"


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_a_reproduction_spec_loads_and_states_its_claims(path):
    spec = load_sweep_spec(path)
    spec.check_trials()  # every grid point's trial config, and every claim against the grid
    assert spec.expect, f"{path.name} states no claim (expect: is empty)"
    assert spec.name == path.stem, f"{path.name}: name {spec.name!r} differs from the file name"
    for claim in spec.expect:
        assert claim.source.strip(), f"{path.name}: a claim without a source"


@pytest.mark.parametrize("path", [p for p in SPECS if p.stem.endswith("_cpu")], ids=lambda p: p.name)
def test_a_cpu_cut_runs_on_one_core_per_trial(path):
    spec = load_sweep_spec(path)
    assert spec.resources.gpus == 0 and spec.resources.cpus <= 1
    assert "Measured" in path.read_text(), f"{path.name}: the header states no measured time"
