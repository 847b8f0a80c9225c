"""The researcher walkthrough (``notebooks/walkthrough.ipynb``) runs top to bottom on tiny data.

The code cells are executed in order with ``exec`` in one fresh namespace rather than by a
Jupyter kernel: the project has no kernel dependency (jupyter, ipykernel and nbclient are not
installed and are not wanted for one test), and the Python a kernel would run is exactly these
cells' source. Only the parameters cell is swapped for tiny values, the way papermill injects
parameters; figures go to matplotlib's Agg backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "walkthrough.ipynb"
PARAMETERS_TAG = "parameters"


def tiny_parameters(out_dir: Path) -> dict[str, Any]:
    """Settings that run the whole walkthrough in seconds on one core: six 48 x 48 studies at
    6-7 mm pixels prepared at 4 mm, one epoch of ``unet_small`` on 32^3 patches. Seed 4 gives
    nodules in both splits and a test set with and without them (so the study AUC is defined)."""
    return {
        "OUT_DIR": str(out_dir),
        "SEED": 4,
        "N_STUDIES": 4,
        "N_TEST_STUDIES": 2,
        "MATRIX_SIZE": 48,
        "PIXEL_SPACING_MM": (6.0, 7.0),
        "SLICE_THICKNESS_MM": (8.0, 12.0),
        "SLICE_COUNT": (20, 28),
        "LESION_DIAMETER_MM": (10.0, 20.0),
        "VESSEL_MAX_SEGMENTS": 50,
        "TARGET_SPACING_MM": (4.0, 4.0, 4.0),
        "NETWORK": "unet_small",
        "PATCH_SIZE": 32,
        "EPOCHS": 1,
        "WORKERS": 1,
        "THREADS": 1,
    }


def code_cells() -> list[dict[str, Any]]:
    """The notebook's code cells, in order."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict[str, Any]) -> str:
    """A cell's source as one string (nbformat stores a string or a list of lines)."""
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def is_parameters(cell: dict[str, Any]) -> bool:
    """True for the papermill-style parameters cell."""
    return PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])


def test_notebook_is_nbformat4_with_outputs_cleared() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    cells = code_cells()
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in cells)
    assert [is_parameters(cell) for cell in cells].count(True) == 1
    assert is_parameters(cells[0]), "the parameters cell must be the first code cell"


def test_tiny_parameters_set_exactly_the_notebook_parameters(tmp_path: Path) -> None:
    """A knob added to the notebook must get a tiny value here, or the test would run it big."""
    defaults: dict[str, Any] = {}
    exec(compile(source(code_cells()[0]), "parameters", "exec"), defaults)
    names = {name for name in defaults if not name.startswith("__")}
    assert names == set(tiny_parameters(tmp_path))


@pytest.mark.slow
def test_walkthrough_runs_top_to_bottom_on_tiny_settings(tmp_path: Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parameters = tiny_parameters(tmp_path / "walkthrough")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        for number, cell in enumerate(code_cells()):
            if is_parameters(cell):
                namespace.update(parameters)
                continue
            exec(compile(source(cell), f"{NOTEBOOK.name}, code cell {number}", "exec"), namespace)
    finally:
        plt.close("all")

    out = tmp_path / "walkthrough"
    for studies, n in (("studies", 4), ("studies-test", 2)):
        manifest = json.loads((out / studies / "manifest.json").read_text())
        assert len(manifest["cases"]) == n
        assert all((out / studies / c["image"]).is_dir() for c in manifest["cases"])
    for prepared, n in (("prepared", 4), ("prepared-test", 2)):
        index = json.loads((out / prepared / "prepared.json").read_text())
        assert len(index["cases"]) == n and not index["failures"]
        assert all((out / prepared / c["cache"]).is_file() for c in index["cases"])
    assert {c["split"] for c in index["cases"]} == {"test"}

    assert (out / "run" / "best_model.pt").is_file()
    assert (out / "model" / "best_model.pt").is_file()
    (epoch,) = json.loads((out / "run" / "history.json").read_text())
    assert epoch["patches_per_s"] > 0 and "cpm" in epoch

    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["n_cases"] == 2
    for key in ("detection", "study", "calibration", "segmentation", "subgroups"):
        assert key in metrics
    detection = metrics["detection"]
    assert set(detection["sensitivity_at_fp_rate"]) == {
        "0.125", "0.25", "0.5", "1", "2", "4", "8"
    }  # fmt: skip
    in_unit = [detection["cpm"], metrics["study"]["auc"]]
    for key in ("study", "findings"):
        in_unit += [metrics["calibration"][key]["ece"], metrics["calibration"][key]["brier"]]
    for interval in in_unit:
        assert interval["value"] is None or 0.0 <= interval["value"] <= 1.0
    assert metrics["n_lesions"] > 0 and detection["cpm"]["value"] is not None
    assert metrics["n_positive_cases"] == 1 and metrics["study"]["auc"]["value"] is not None
    for plot in ("froc.png", "roc.png", "reliability.png"):
        assert (out / "evaluation" / plot).stat().st_size > 0
    assert isinstance(namespace["froc_figure"], matplotlib.figure.Figure)
    assert isinstance(namespace["reliability_figure"], matplotlib.figure.Figure)
