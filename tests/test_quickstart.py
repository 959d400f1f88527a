"""The README's main job: the quickstart sweep on an embedded local Ray, then the store CLI and the report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.load import final_evals
from study.store import Store

ROOT = Path(__file__).resolve().parents[1]


def oodstudy(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "study.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_quickstart_sweep_leaves_a_store_the_cli_and_the_analysis_read(tmp_path):
    run = oodstudy("run", str(ROOT / "search_spaces" / "quickstart.yaml"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # the end-of-run tables: one row per cell (seeds pooled), the boundary and the equivalence rate
    assert "trials per cell (seeds pooled)" in run.stdout and "task.digits=2 " in run.stdout
    assert "train.seed=0" not in run.stdout and "equiv" in run.stdout and "seeds = usable/all seeds" in run.stdout
    # distributions first: the summary headlines the seeds' median and range; the best seed is the last column
    assert "exact_match per cell: the median over its seeds [min-max]" in run.stdout
    header = next(line for line in run.stdout.splitlines() if line.startswith("cell ") and "seeds" in line)
    assert header.split()[:3] == ["cell", "seeds", "id"] and header.endswith("best seed")
    # the spec's claims, each a median over the cell's seeds beside the published value
    assert "claims: " in run.stdout and "[Xu et al. 2024 (arXiv 2407.17963), D_4 addition]" in run.stdout
    store_dir = tmp_path / "results"
    store = Store(str(store_dir), create=False)
    trials = store.frame("trials", study="quickstart")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}

    listing = oodstudy("store", "ls", "--store", str(store_dir), cwd=tmp_path)
    assert listing.returncode == 0 and "quickstart" in listing.stdout
    assert oodstudy("store", "validate", "--store", str(store_dir), cwd=tmp_path).returncode == 0

    final = final_evals(store, "quickstart")
    assert set(final["task.digits"]) == {2, 3} and set(final["split"]) == {"id", "ood"}
    assert (final["step"] == 4000).all()
    # read as a distribution over seeds: 3-digit addition crosses from ~10% to 100% ID between
    # ~2.5K and 6K steps by seed and CPU (seed 1 of digits=3 ends at 0.089 ID on this machine at
    # 4,000 steps, in the code before and after this round): every cell has a seed that learned
    # it, and the median trial is there
    id_exact = final[(final["split"] == "id") & (final["metric"] == "exact_match")]
    per_trial = id_exact.groupby(["trial_id", "task.digits"])["value"].mean().reset_index()
    assert per_trial.groupby("task.digits")["value"].max().min() > 0.9
    assert per_trial["value"].median() > 0.9
    assert (final.loc[(final["split"] == "ood") & (final["metric"] == "exact_match"), "value"].max()) < 0.1

    # every Python snippet of the README runs as printed, each on its own, beside ./results
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    assert len(snippets) >= 3
    for snippet in snippets:
        ran = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, f"README snippet failed:\n{snippet}\n{ran.stderr[-2000:]}"

    # the README's first command again, into the same ./results: refused, nothing doubled
    again = oodstudy("run", str(ROOT / "search_spaces" / "quickstart.yaml"), cwd=tmp_path, timeout=300)
    assert again.returncode == 2 and "study quickstart already exists" in again.stderr
    assert "oodstudy resume quickstart --store" in again.stderr
    assert len(Store(str(store_dir), create=False).frame("trials", study="quickstart")) == 4

    report = oodstudy(
        "report", "--store", str(store_dir), "--study", "quickstart", "--out", str(tmp_path / "rep"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    # the report opens with the seed distribution and the spec's claims; the best seed is never the headline
    summary = html[html.index('id="summary"') : html.index('id="overview"')]
    assert "(median of 2 seeds, range" in summary and "best of" not in summary
    assert '<h2 id="claims">Claims</h2>' in summary and "[Xu et al. 2024 (arXiv 2407.17963), D_4 addition]" in summary
    # oodstudy check re-reads the same store: one line per claim and cell
    check = oodstudy("check", "quickstart", "--store", str(store_dir), cwd=tmp_path)
    assert check.returncode in (0, 1) and check.stdout.startswith("study quickstart: claims: "), check.stderr[-2000:]
    assert len(check.stdout.strip().splitlines()) == 1 + 4 * 2  # the tally, then 4 claims x 2 cells
    pngs = list((tmp_path / "rep").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)
