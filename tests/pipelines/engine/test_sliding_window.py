"""The numpy sliding window equals MONAI's ``sliding_window_inference``, and the lung crop only
changes where windows run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from pipelines.bundle import BlendMode, InferenceConfig
from pipelines.datasets.manifest import Lesion
from pipelines.engine import load_engine
from pipelines.engine.sliding_window import (
    SlidingWindow,
    blended_logits,
    importance_map,
    sigmoid,
    window_starts,
)
from pipelines.findings import Finding, extract_findings
from pipelines.model.release import verify_release
from pipelines.synth.config import Attachment, SynthConfig
from pipelines.synth.study import generate_study
from pipelines.transforms import LungCropConfig, PreprocessConfig, preprocess_volume, window
from pipelines.volume import Provenance, Volume
from tests.pipelines.test_transforms import lungs_hu

WHOLE_VOLUME = LungCropConfig(enabled=False)
RELEASE = Path(__file__).parents[3] / "models" / "lung-nodule-unet" / "release"


def _predictor(batch: np.ndarray) -> np.ndarray:
    """A window-position-dependent stand-in for a network: blending errors would show."""
    k = np.arange(batch.shape[2], dtype=np.float32)[:, None, None]
    return (np.sin(batch * 7.0) + 0.01 * k).astype(np.float32)


def _monai(image: np.ndarray, roi: tuple[int, int, int], overlap: float, blend: str) -> np.ndarray:
    def predictor(windows: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(_predictor(windows.numpy()))

    with torch.no_grad():
        out = sliding_window_inference(
            torch.from_numpy(image)[None, None], roi, 3, predictor, overlap=overlap, mode=blend
        )
    return np.asarray(out)[0, 0]


@pytest.mark.parametrize("blend", list(BlendMode))
@pytest.mark.parametrize(
    ("shape", "roi", "overlap"),
    [
        ((40, 57, 33), (16, 16, 16), 0.25),
        ((20, 31, 64), (16, 24, 32), 0.5),
        ((10, 70, 12), (16, 16, 16), 0.25),  # smaller than a window on two axes: padded
    ],
)
def test_blended_logits_equal_monai(
    shape: tuple[int, int, int], roi: tuple[int, int, int], overlap: float, blend: BlendMode
) -> None:
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    ours = blended_logits(
        image, _predictor, roi_size_kji=roi, overlap=overlap, blend=blend, batch_size=3
    )
    np.testing.assert_allclose(ours, _monai(image, roi, overlap, blend.value), atol=1e-6)


def test_window_starts_end_flush_with_the_far_edge() -> None:
    assert window_starts(64, 64, 0.25) == [0]
    assert window_starts(100, 64, 0.25) == [0, 36]
    assert window_starts(208, 64, 0.25) == [0, 48, 96, 144]
    assert window_starts(209, 64, 0.25) == [0, 48, 96, 144, 145]


def test_gaussian_weights_peak_in_the_centre_and_stay_positive() -> None:
    weight = importance_map((8, 16, 16), BlendMode.GAUSSIAN)
    assert weight.dtype == np.float32 and weight.min() >= 1e-3
    assert weight[3:5, 7:9, 7:9].min() == weight.max()


def test_sigmoid_is_stable_for_large_logits() -> None:
    with np.errstate(over="raise"):
        values = sigmoid(np.array([-1e4, -1.0, 0.0, 1.0, 1e4], np.float32))
    np.testing.assert_allclose(values, [0.0, 0.26894143, 0.5, 0.7310586, 1.0], rtol=1e-6)


def test_result_does_not_depend_on_the_window_batch() -> None:
    window = SlidingWindow(InferenceConfig(roi_size_kji=(16, 16, 16), lung_crop=WHOLE_VOLUME))
    image = np.random.default_rng(1).random((30, 40, 35)).astype(np.float32)
    np.testing.assert_array_equal(
        window.probabilities(image, _predictor, batch_size=1),
        window.probabilities(image, _predictor, batch_size=5),
    )


def test_without_preprocessing_the_windows_cover_the_whole_volume() -> None:
    window = SlidingWindow(InferenceConfig(roi_size_kji=(16, 16, 16)))
    image = np.zeros((20, 30, 30), np.float32)
    assert window.region(image) == (slice(None),) * 3


def test_a_non_volume_is_refused() -> None:
    window = SlidingWindow(InferenceConfig(roi_size_kji=(16, 16, 16)))
    with pytest.raises(ValueError, match=r"\[k, j, i\]"):
        window.probabilities(np.zeros((16, 16), np.float32), _predictor)


class CountingPredictor:
    """A voxelwise stand-in network (no context, so blending cannot change its output) that
    counts the windows it sees."""

    def __init__(self) -> None:
        self.windows = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.windows += len(batch)
        return (batch * 8.0 - 3.0).astype(np.float32)


def test_lung_crop_runs_fewer_windows_and_changes_nothing_inside_the_lungs() -> None:
    image = window(lungs_hu(), (-1000.0, 400.0))  # 150 x 160 x 200 mm, lungs 160 x 100 x 120
    inference = InferenceConfig(roi_size_kji=(32, 32, 32))
    cropped, whole = CountingPredictor(), CountingPredictor()
    crop_prob = SlidingWindow(inference, PreprocessConfig()).probabilities(image, cropped)
    no_crop = inference.model_copy(update={"lung_crop": WHOLE_VOLUME})
    whole_prob = SlidingWindow(no_crop, PreprocessConfig()).probabilities(image, whole)
    region = SlidingWindow(inference, PreprocessConfig()).region(image)
    assert region != (slice(None),) * 3 and cropped.windows < whole.windows
    np.testing.assert_allclose(crop_prob[region], whole_prob[region], atol=1e-6)
    outside = np.ones(image.shape, bool)
    outside[region] = False
    assert np.all(crop_prob[outside] == 0.0)


def _found(findings: list[Finding], lesion: Lesion) -> Finding | None:
    """The best finding within the lesion's radius (at least 5 mm) of its centre."""
    near = [
        f
        for f in findings
        if np.linalg.norm(np.subtract(f.center_lps_mm, lesion.center_lps_mm))
        <= max(lesion.diameter_mm / 2, 5.0)
    ]
    return max(near, key=lambda f: f.score, default=None)


@pytest.mark.slow
def test_shipped_model_finds_the_same_lesions_with_and_without_the_lung_crop() -> None:
    """A synthetic chest with two lesions against the pleura, through the shipped release.

    The crop moves the window grid, and this model normalises each window by its own content,
    so weak findings do change; the lesions must not. (Over six such studies the crop found
    13 of 16 lesions, the whole body crop 12: ``benchmarks/RESULTS.md``.)
    """
    bundle = verify_release(RELEASE)
    config = SynthConfig(
        matrix_size=256,
        pixel_spacing_mm=(1.3, 1.5),
        slice_thickness_mm=(2.0, 2.5),
        slice_count=(60, 90),
        lesion_diameter_mm=(10.0, 30.0),
        lesion_count_weights=[0, 0, 1, 1],
        lesion_attachment_weights={Attachment.PLEURA: 2, Attachment.NONE: 1, Attachment.VESSEL: 1},
        vessel_max_segments=4000,
    )
    study = generate_study(config, 21, 5)
    assert all("pleura" in lesion.attached_to for lesion in study.lesions)
    volume = Volume(study.volume_hu, study.affine_lps, Provenance(source_format="nifti"))
    pre = preprocess_volume(volume, bundle.preprocess)
    # the lung crop is not part of the preprocessing contract: the same model.onnx loads for both
    no_crop = bundle.model_copy(
        update={"inference": bundle.inference.model_copy(update={"lung_crop": WHOLE_VOLUME})}
    )
    findings = {}
    for name, settings in (("crop", bundle), ("whole", no_crop)):
        engine = load_engine("onnx", settings, RELEASE / "model.onnx")
        prob = engine.predict(pre.array)
        findings[name] = extract_findings(prob, pre.affine_lps, bundle.findings)
    crop, whole = findings["crop"], findings["whole"]
    for lesion in study.lesions:
        in_whole, in_crop = _found(whole, lesion), _found(crop, lesion)
        if in_whole is not None:
            assert in_crop is not None, f"lesion {lesion.id} lost by the crop"
            gap_mm = np.linalg.norm(np.subtract(in_crop.center_lps_mm, in_whole.center_lps_mm))
            assert gap_mm < 3.0
