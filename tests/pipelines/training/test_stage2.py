"""Stage 2 of the two-stage detector: patches, the classifier's training and its evaluation.

The patches and the FROC figures are checked on hand-made arrays whose answer is known; the
training on a small prepared dataset made by the synthetic generator at the reference
preprocessing (1.0 x 1.0 x 1.5 mm), through the ``basira stage2`` commands a researcher runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.datasets.manifest import Lesion
from pipelines.datasets.prepare import (
    PrepareConfig,
    PreparedIndex,
    load_prepared_case,
    prepare_manifest,
)
from pipelines.datasets.splits import SplitConfig
from pipelines.errors import InputError
from pipelines.evaluation.froc import CaseDetections
from pipelines.evaluation.predictions import CasePrediction, DataInfo, Predictions
from pipelines.evaluation.predictions import ModelInfo as PredictionsModel
from pipelines.findings import Finding
from pipelines.patches import PatchSpec, coarsen, extract_patches
from pipelines.synth.config import SynthConfig
from pipelines.synth.dataset import generate_dataset
from pipelines.training.stage2 import (
    CandidateClassifier,
    Stage2Config,
    Stage2Sampler,
    evaluate_stage2,
    load_stage2_case,
    train_stage2,
)
from pipelines.transforms import PreprocessConfig
from tests.cli import Basira

SPEC = PatchSpec(shape_kji=(8, 12, 12), context_factor=2)


def test_a_patch_is_centred_on_its_point_and_air_outside_the_volume() -> None:
    image = np.zeros((20, 30, 40), np.float32)
    image[10, 15, 20] = 1.0
    patches = extract_patches(image, np.array([[10.2, 14.8, 20.4], [0.0, 0.0, 0.0]]), SPEC)
    assert patches.shape == (2, 2, 8, 12, 12)
    assert patches[0, 0, 4, 6, 6] == 1.0 and patches[0, 0].sum() == 1.0
    # at the corner, the half of the patch outside the volume is air (0)
    assert not patches[1, 0, :4].any() and not patches[1, 0, :, :6].any()


def test_the_context_channel_is_the_block_mean_around_the_same_point() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((24, 32, 32)).astype(np.float32)
    coarse = coarsen(image, 2)
    assert coarse.shape == (12, 16, 16)
    assert coarse[3, 4, 5] == pytest.approx(image[6:8, 8:10, 10:12].mean(), abs=1e-6)
    patch = extract_patches(image, np.array([[12.0, 16.0, 16.0]]), SPEC)[0, 1]
    assert np.allclose(patch, coarse[2:10, 2:14, 2:14])


def test_patches_refuse_a_non_volume_or_bad_centres() -> None:
    with pytest.raises(InputError, match="3-D image"):
        extract_patches(np.zeros((4, 4)), np.zeros((1, 3)), SPEC)
    with pytest.raises(InputError, match="finite"):
        extract_patches(np.zeros((4, 4, 4)), np.array([[np.nan, 0, 0]]), SPEC)


def test_the_classifier_gives_one_logit_a_patch() -> None:
    model = CandidateClassifier((4, 8, 8)).eval()
    with torch.inference_mode():
        out = model(torch.zeros((3, 2, *SPEC.shape_kji)))
    assert out.shape == (3,)


def _case(case_id: str, lesions: list[tuple[tuple[float, float, float], float]]) -> list[Lesion]:
    return [
        Lesion(id=n + 1, center_lps_mm=centre, diameter_mm=diameter)
        for n, (centre, diameter) in enumerate(lesions)
    ]


def test_froc_figures_of_a_perfect_and_of_a_blind_stage_2() -> None:
    lesion = _case("a", [((0.0, 0.0, 0.0), 6.0)])
    free: list[Lesion] = []
    far = np.array([[50.0, 50.0, 50.0], [60.0, 60.0, 60.0]])

    def detections(hit_score: float, fp_score: float) -> list[CaseDetections]:
        return [
            CaseDetections(
                "a",
                np.array([[0.0, 0.0, 0.0]]),
                np.array([6.0]),
                np.vstack([[0.5, 0.0, 0.0], far]),
                np.array([hit_score, fp_score, fp_score]),
            ),
            CaseDetections("b", np.zeros((0, 3)), np.zeros(0), far, np.array([fp_score] * 2)),
        ]

    perfect = evaluate_stage2(detections(0.9, 0.1), [lesion, free], n_bootstrap=20)
    assert perfect["groups"]["all"]["cpm"]["value"] == pytest.approx(1.0)
    assert perfect["groups"]["size 6-10 mm"]["n_lesions"] == 1
    assert perfect["study_auc_max"] == pytest.approx(1.0)
    # one false positive a scan: the threshold keeps 2 of the 4 false positives
    assert perfect["lesion_free"]["threshold_at_1fp"] == pytest.approx(0.1)
    assert perfect["lesion_free"]["share_with_a_finding_above_0.5"] == 0.0
    blind = evaluate_stage2(detections(0.1, 0.9), [lesion, free], n_bootstrap=20)
    assert blind["groups"]["all"]["sensitivity_at_1fp"]["value"] == pytest.approx(0.0)
    assert blind["lesion_free"]["findings_median_above_0.5"] == 2.0


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreparedIndex]:
    """Four small chests (128 x 128 at 0.8 mm, 30-40 slices), prepared at 1 x 1 x 1.5 mm."""
    root = tmp_path_factory.mktemp("stage2-data")
    synth = SynthConfig(
        matrix_size=128,
        pixel_spacing_mm=(0.8, 0.8),
        slice_thickness_mm=(2.0, 2.5),
        coverage_mm=(60.0, 80.0),
        slice_count=(30, 40),
        lesion_diameter_mm=(5.0, 12.0),
        lesion_count_weights=[0.0, 0.5, 0.5],
    )
    generate_dataset(synth, root / "synth", n_studies=4, seed=5, workers=1)
    config = PrepareConfig(
        preprocess=PreprocessConfig(),
        split=SplitConfig(seed=0, val_fraction=0.25, test_fraction=0.0),
    )
    index = prepare_manifest(root / "synth" / "manifest.json", root / "prepared", config)
    return root / "prepared", index


def _cases(data: Path, index: PreparedIndex, candidates: dict, split: str):
    return [
        load_stage2_case(data, case, candidates[case.case_id], PatchSpec(), 400)
        for case in index.cases
        if case.split == split
    ]


def test_stage_2_trains_on_real_inserted_and_negative_patches_and_resumes_exactly(
    small_prepared: tuple[Path, PreparedIndex], tmp_path: Path, basira: Basira
) -> None:
    data, index = small_prepared
    candidates = tmp_path / "candidates.json"
    assert basira("stage2", "candidates", "--data", str(data), "--out", str(candidates)) == 0
    found = json.loads(candidates.read_text())
    assert set(found) == {case.case_id for case in index.cases}
    cases = _cases(data, index, found, "train")
    config = Stage2Config(channels=(4, 8, 8), batch_size=10, steps=4, checkpoint_every=2)
    sampler = Stage2Sampler(cases, config, PreprocessConfig(), np.random.default_rng(0))
    patches, labels, negative = sampler.batch()
    assert patches.shape == (10, 2, *config.patch.shape_kji)
    assert labels.tolist() == [1.0] * 5 + [0.0] * 5
    assert (negative[:5] == -1).all() and (negative[5:] >= 0).all()
    assert sampler.inserted >= 1  # lesions were painted, not only real ones reused

    whole = train_stage2(cases, config, tmp_path / "whole", PreprocessConfig(), threads=1)
    assert whole.steps == 4 and whole.patches == 40 and whole.inserted_lesions >= 4

    def stop_at_3(step: int, _loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stage2(
            cases, config, tmp_path / "cut", PreprocessConfig(), threads=1, on_step=stop_at_3
        )
    resumed = train_stage2(cases, config, tmp_path / "cut", PreprocessConfig(), threads=1)
    assert resumed.steps == 4 and resumed.inserted_lesions == whole.inserted_lesions
    a = torch.load(tmp_path / "whole" / "stage2_model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "stage2_model.pt", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


def _proposals_on_lesions(data: Path, index: PreparedIndex, out: Path) -> None:
    """A ``basira evaluate`` predictions file whose findings sit on each val case's lesions."""
    cases = []
    for case in index.cases:
        if case.split != "val":
            continue
        lesions = load_prepared_case(data / case.cache)["lesions"]
        findings = [
            Finding(n + 1, tuple(raw["center_ijk"]), tuple(raw["center_lps_mm"]), 5.0, 0.1, 0.9)
            for n, raw in enumerate(lesions)
        ]
        cases.append(
            CasePrediction(
                case_id=case.case_id,
                slice_thickness_mm=None,
                study_score=0.9,
                study_probability=0.9,
                dice_counts=None,
                lesions=[
                    Lesion.model_validate(
                        {k: raw[k] for k in ("id", "center_lps_mm", "diameter_mm")}
                    )
                    for raw in lesions
                ],
                findings=findings,
            )
        )
    predictions = Predictions(
        model=PredictionsModel(
            name="unet",
            version="0",
            weights_sha256="0",
            calibration_method=None,
            operating_point=None,
        ),
        data=DataInfo(path=str(data), split="val", sha256="0", n_cases=len(cases)),
        cases=cases,
    )
    out.write_text(predictions.model_dump_json(), encoding="utf-8")


def test_stage_2_commands_train_and_report_froc_on_the_validation_split(
    small_prepared: tuple[Path, PreparedIndex], tmp_path: Path, basira: Basira, capsys
) -> None:
    data, index = small_prepared
    candidates, run, report = tmp_path / "c.json", tmp_path / "run", tmp_path / "val.json"
    proposals = tmp_path / "predictions.json"
    _proposals_on_lesions(data, index, proposals)
    assert basira("stage2", "candidates", "--data", str(data), "--out", str(candidates)) == 0
    assert (
        basira(
            "stage2",
            "train",
            "--data",
            str(data),
            "--candidates",
            str(candidates),
            "--out",
            str(run),
            "--steps",
            "2",
            "--threads",
            "1",
        )
        == 0
    )
    assert "distinct inserted lesions" in capsys.readouterr().out
    assert (
        basira(
            "stage2",
            "evaluate",
            "--data",
            str(data),
            "--candidates",
            str(candidates),
            "--run",
            str(run),
            "--out",
            str(report),
            "--budgets",
            "1,200",
            "--proposals",
            str(proposals),
        )
        == 0
    )
    figures = json.loads(report.read_text())
    assert set(figures) == {"1", "1+proposals", "200", "200+proposals"}
    for budget in figures.values():
        assert 0.0 <= budget["groups"]["all"]["cpm"]["value"] <= 1.0
        assert budget["n_cases"] == 1
    # proposals on every lesion: each lesion is found at some score, whatever stage 1 found
    lesions = figures["1+proposals"]["groups"]["all"]
    assert lesions["found_at_any_score"] == lesions["n_lesions"] > 0
    assert "budget 200+proposals: CPM" in capsys.readouterr().out


def test_stage_2_commands_refuse_missing_or_foreign_inputs_with_coded_errors(
    small_prepared: tuple[Path, PreparedIndex], tmp_path: Path, basira: Basira, capsys
) -> None:
    data, _index = small_prepared
    missing = tmp_path / "none.json"
    args = ["--data", str(data), "--candidates", str(missing), "--out", str(tmp_path / "r")]
    assert basira("stage2", "train", *args) != 0
    assert "error[input.not_found]" in capsys.readouterr().err
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"someone-else": []}))
    args[3] = str(partial)
    assert basira("stage2", "train", *args) != 0
    err = capsys.readouterr().err
    assert "error[input.invalid]" in err and "holds no candidates" in err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("[1, 2")
    args[3] = str(garbage)
    assert basira("stage2", "train", *args) != 0
    assert "error[input.invalid]" in capsys.readouterr().err
    candidates = tmp_path / "c.json"
    assert basira("stage2", "candidates", "--data", str(data), "--out", str(candidates)) == 0
    capsys.readouterr()
    assert basira(
        "stage2", "evaluate", "--data", str(data), "--candidates", str(candidates),
        "--run", str(tmp_path / "untrained"), "--out", str(tmp_path / "m.json"),
    ) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "error[input.not_found]" in err and "stage2_model.pt" in err
    assert "Traceback" not in err
