"""The HTML report: self-contained, real images, a CSV per table, sections per task family."""

from __future__ import annotations

import base64
import re

import matplotlib.image as mpimg
import numpy as np
import pytest

from analysis.report import build_report
from study.cli import main
from study.config import ConfigError
from study.store import Store
from test_analysis import build_arith, build_icl, build_icl_scores, build_points, build_scores

PNG = b"\x89PNG\r\n\x1a\n"


def build_attention_scores(store: Store, study: str = "arith") -> None:
    """Attention alignment of trials a0 and a1 (2 blocks x 2 heads x 3 digits, ID and OOD
    length 4) and their units-digit probe after block 0, at their last step (200)."""
    for trial_id in ("a0", "a1"):
        rows = []
        for layer in (0, 1):
            for head in (0, 1):
                for position in (0, 1, 2):
                    for split, length in (("id", 3), ("ood", 4)):
                        value = 0.9 if head == 0 and layer == 0 else 0.2
                        for kind, v in (("attention_alignment", value), ("attention_argmax", float(position))):
                            rows.append(
                                {
                                    "trial_id": trial_id,
                                    "step": 200,
                                    "kind": kind,
                                    "split": split,
                                    "position": position,
                                    "layer": layer,
                                    "head": head,
                                    "length": length,
                                    "value": v,
                                }
                            )
        rows.append(
            {
                "trial_id": trial_id,
                "step": 200,
                "kind": "probe_digit",
                "split": "id",
                "position": 0,
                "layer": 0,
                "length": 3,
                "value": 0.4,
            }
        )
        store.append(
            "representations", rows, study=study, cell=f"model.size=nano|task.digits=3|train.seed={trial_id[1]}"
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(str(tmp_path_factory.mktemp("store")), create=True)
    build_arith(s, "arith")
    build_points(s, "arith", "a2", "model.size=nano|task.digits=3|train.seed=2")
    build_scores(s, "arith")
    build_attention_scores(s, "arith")
    build_icl(s, "icl")
    build_icl_scores(s, "icl")
    build_arith(s, "both")
    build_icl(s, "both")
    return s


def check_images(out) -> list[str]:
    names = sorted(p.name for p in out.glob("*.png"))
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 8_000, name
        image = mpimg.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 300, name
        assert np.ptp(image[..., :3]) > 0.5, f"{name} is blank"
    return names


def embedded(index) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', index.read_text())]


@pytest.fixture(scope="module")
def reports(store, tmp_path_factory) -> dict:
    """One report per study; the arithmetic one through the CLI."""
    out = tmp_path_factory.mktemp("reports")
    assert main(["report", "--store", store.uri, "--study", "arith", "--out", str(out / "arith")]) == 0
    return {
        "arith": out / "arith" / "index.html",
        "icl": build_report(store, "icl", out / "icl"),
        "both": build_report(store.uri, "both", out / "both"),
    }


@pytest.mark.slow
def test_arithmetic_report(reports):
    index = reports["arith"]
    out = index.parent
    text = index.read_text()
    assert index.exists() and 'id="arithmetic"' in text and 'id="in-context-learning"' not in text
    names = check_images(out)
    assert {
        "phase_boundary.png",
        "phase_ood_score.png",
        "length_curves.png",
        "equivalence_bars.png",
        "separation.png",
        "pca_pca_units_digit.png",
        "structure_vs_step.png",
        "structure_vs_length.png",
        "phase_structure.png",
        "repr_equivalence_vs_length.png",
        "phase_repr_equivalence.png",
        "attention_alignment.png",
    } <= set(names)
    images = embedded(index)
    assert len(images) == len(names) and all(i.startswith(PNG) for i in images)
    for csv in (
        "breakdown_exact_match",
        "curves_exact_match",
        "equivalence",
        "trials",
        "grid_points",
        "grid_axes",
        "separation",
        "structure_first",
        "structure_by_length",
        "structure_cells",
        "repr_equivalence_cells",
        "structure_by_layer",
        "attention_alignment",
    ):
        assert (out / f"{csv}.csv").stat().st_size > 50, csv
    import pandas as pd

    aligned = pd.read_csv(out / "attention_alignment.csv")
    assert len(aligned) == 2 * 2 * 3 * 2 and aligned["trial_id"].nunique() == 1  # one trial: heads differ by trial
    assert aligned.loc[(aligned["layer"] == 0) & (aligned["head"] == 0), "alignment"].eq(0.9).all()
    assert (aligned["most_attended_place"] == aligned["position"]).all()
    layers = pd.read_csv(out / "structure_by_layer.csv")
    nano = layers[(layers["cell"] == "model.size=nano|task.digits=3") & (layers["position"] == 0)]
    assert nano["layer"].tolist() == [0, -1] and nano["n"].tolist() == [2, 3]  # the final state: a0-a2
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from elsewhere
    # the representation-equivalence diagram draws its own column, not the probe's
    assert list(pd.read_csv(out / "repr_equivalence_cells.csv").columns[3:5]) == ["cell", "repr_equivalence"]
    assert (out / "phase_structure.png").read_bytes() != (out / "phase_repr_equivalence.png").read_bytes()
    # the attention scores (a row per block, head, digit and length): the figure and a link, no inline table
    attention = text[text.index("<b>Attention alignment and the most attended") :]
    assert re.match(r'<b>[^<]*</b> \(24 rows\): <a href="attention_alignment.csv">', attention)
    assert not attention.split("</p>", 1)[1].lstrip().startswith('<div class="table">')


@pytest.mark.slow
def test_icl_report(reports):
    index = reports["icl"]
    text = index.read_text()
    assert 'id="in-context-learning"' in text and 'id="arithmetic"' not in text
    names = check_images(index.parent)
    assert {
        "nmse_curves.png",
        "selection_gap.png",
        "shift_errors.png",
        "mixture_effect.png",
        "coefficient_r2.png",
        "phase_boundary_nnz.png",
    } <= set(names)
    for csv in ("breakdown_nmse", "icl_curves", "selection_gap", "shift_errors", "mixture_effect"):
        assert (index.parent / f"{csv}.csv").exists()


@pytest.mark.slow
def test_a_study_with_both_families_gets_both_sections(reports):
    index = reports["both"]
    text = index.read_text()
    assert 'id="arithmetic"' in text and 'id="in-context-learning"' in text
    assert len(embedded(index)) == len(check_images(index.parent))


def test_a_missing_study_is_a_clear_error(store, tmp_path, capsys):
    assert main(["report", "--store", store.uri, "--study", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "study 'nope' is not in the store" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="studies there: arith, both, icl"):
        build_report(store.uri, "nope", tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_a_table_writes_steps_as_integers_and_leaves_out_empty_columns(tmp_path):
    """Steps read 1000, not 1e+03 (in the page and the CSV), no number from 1000 on is in
    scientific notation, and a column without a value in any row is left out of the page
    (the CSV keeps it; the link says which)."""
    import pandas as pd

    from analysis.report import Page

    frame = pd.DataFrame(
        {
            "trial_id": ["t0", "t1"],
            "structure_step": [1000.0, None],
            "steps": [4000.0, 12000.0],
            "chance": [None, None],
            "note": ["", None],
            "loss": [12345.6, 0.25],
        }
    )
    page = Page(tmp_path)
    page.table("t", frame, "T")
    markup = page.parts[-1]
    assert not re.search(r"\d(\.\d+)?e[+-]\d+", markup), markup
    cells = re.findall(r"<td>([^<]*)</td>", markup)
    assert cells == ["t0", "1000", "4000", "12346", "t1", "", "12000", "0.25"], cells
    assert "<th>chance</th>" not in markup and "<th>note</th>" not in markup
    assert "empty here: chance, note" in markup
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv.columns) == list(frame.columns)
    assert (tmp_path / "t.csv").read_text().splitlines()[1].startswith("t0,1000,4000,")


def test_phase_diagram_labels_read_on_every_square_of_a_reversed_colour_map():
    """The selection-phase map uses magma_r (light = small gap): a label's colour follows its
    square's luminance, so the darkest square (the largest gap) gets white text, not black."""
    import pandas as pd

    from analysis import plots

    cells = pd.DataFrame(
        {
            "task.mix_weight": [0.0, 0.0, 1.0, 1.0],
            "shift_value": [1.0, 3.0, 1.0, 3.0],
            "gap_median": [0.04, 0.55, 0.04, 0.03],
        }
    )
    for cmap in ("magma_r", "viridis"):
        fig = plots.phase_diagram(cells, "shift_value", "task.mix_weight", value="gap_median", cmap=cmap)
        ax = fig.axes[0]
        image = ax.images[0]
        for text in ax.texts:
            x, y = (round(v) for v in text.get_position())
            face = image.cmap(image.norm(image.get_array()[y, x]))
            luminance = 0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2]
            assert abs(luminance - (0.0 if text.get_color() == "black" else 1.0)) > 0.5, (cmap, text.get_text())
        colours = {t.get_text(): t.get_color() for t in ax.texts}
        assert colours["0.55"] == ("white" if cmap == "magma_r" else "black")
