"""The report in a real browser (Chromium through Playwright): no horizontal overflow at
laptop and narrow widths, every figure loads, nothing logs an error; and the summary
at the top states the finding in numbers."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from analysis.report import build_report
from study.store import Store
from test_analysis import build_arith, build_icl, build_points

CHROMIUM = os.environ.get("OODSTUDY_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    store = Store(str(tmp_path_factory.mktemp("store")), create=True)
    build_arith(store, "arith")
    build_points(store, "arith", "a2", "model.size=nano|task.digits=3|train.seed=2")
    build_icl(store, "icl")
    out = tmp_path_factory.mktemp("reports")
    return {name: build_report(store, name, out / name) for name in ("arith", "icl")}


def test_the_report_opens_with_the_finding_in_numbers(reports):
    text = reports["arith"].read_text()
    headings = re.findall(r'<h2 id="([^"]+)"', text)
    assert headings[0] == "summary" and headings[1] == "overview"
    summary = text[text.index('id="summary"'):text.index('id="overview"')]
    # the fixture's cells (tests/test_analysis.py): nano/3 learns 99% ID and breaks at length 5,
    # micro/3 breaks at 7; their OOD answers are the equivalence answers
    assert "model.size=nano|task.digits=3: ID exact match 99% (best of 3 usable trials); breaks at length 5" in summary
    assert "model.size=micro|task.digits=3: ID exact match 100%" in summary and "breaks at length 7" in summary
    assert "100% of answers equal f(a mod 10^n, b mod 10^n)" in summary
    assert "model.size=nano|task.digits=5: no usable trial (its 1 trial(s) failed)" in summary
    assert summary.count("<img") == 1
    icl = reports["icl"].read_text()
    icl_summary = icl[icl.index('id="summary"'):icl.index('id="overview"')]
    assert "vs the best baseline" in icl_summary and icl_summary.count("<img") == 1
    # the representations: figures under a plain title, the table behind a link only
    assert 'id="what-the-hidden-states-encode"' in text and 'href="separation.csv"' in text
    section = text[text.index('id="what-the-hidden-states-encode"'):]
    assert "<table" not in section


@pytest.mark.slow
def test_the_report_fits_the_page_and_every_figure_loads_in_a_browser(reports):
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for name, index in reports.items():
                for width in (1280, 800):
                    page = browser.new_page(viewport={"width": width, "height": 900})
                    problems: list[str] = []
                    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                    page.on("pageerror", lambda e: problems.append(str(e)))
                    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
                    page.goto(index.as_uri(), wait_until="load")
                    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    assert overflow <= 0, (name, width, overflow)
                    images = page.evaluate(
                        "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, "
                        "i.getBoundingClientRect().right])")
                    assert len(images) >= 5, (name, images)
                    for alt, complete, natural, right in images:
                        assert complete and natural > 300, (name, alt)
                        assert right <= width, (name, width, alt, right)  # scaled to the page, not cut
                    # wide tables scroll inside their box; the box itself stays within the page
                    boxes = page.evaluate("Array.from(document.querySelectorAll('div.table'))"
                                          ".map(d => d.getBoundingClientRect().right)")
                    assert boxes and max(boxes) <= width, (name, width, boxes)
                    if name == "arith" and width == 1280:  # at laptop width every arithmetic table fits whole
                        widths = page.evaluate("Array.from(document.querySelectorAll('div.table'))"
                                               ".map(d => d.scrollWidth - d.clientWidth)")
                        assert max(widths) <= 0, widths
                    assert not problems, (name, problems)
                    page.close()
        finally:
            browser.close()


def test_each_cell_is_shaded_over_its_own_training_lengths():
    """Trained on 2 vs 3 digits: lengths 1-2 are ID for the first cell only, so each cell
    gets its own panel with its own ID range shaded."""
    import pandas as pd

    from analysis import plots

    rows = [{"family": "arithmetic", "task.digits": d, "cell": f"task.digits={d}", "shift": "length", "x": x,
             "split": "id" if x <= d else "ood", "best": 1.0 if x <= d else 0.0, "q25": 0.0, "q75": 1.0, "n": 2}
            for d in (2, 3) for x in range(1, 6)]
    fig = plots.length_curves(pd.DataFrame(rows))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["task.digits=2", "task.digits=3"]
    edges = [max(p.get_x() + p.get_width() for p in ax.patches) for ax in axes]
    assert edges == [2.5, 3.5]
