"""Generate one synthetic study in memory: protocol, anatomy, vessels, lesions, blur and noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipelines.datasets.manifest import Lesion
from pipelines.dicom.write_ct import CTSeriesInfo
from pipelines.synth.anatomy import Array, Phantom, sample_phantom, with_contrast
from pipelines.synth.config import SynthConfig
from pipelines.synth.grid import Grid, make_grid
from pipelines.synth.lesions import (
    LesionModel,
    attachments,
    lung_depth_map,
    paint_lesion,
    place_lesion,
    to_manifest_lesion,
)
from pipelines.synth.protocol import Stream, StudyProtocol, sample_protocol, study_rng
from pipelines.synth.render import render_anatomy
from pipelines.synth.vessels import Tubes, bronchi_beside, grow_vessel_trees, paint_tubes

#: HU range a 12-bit CT stores.
HU_RANGE = (-1024.0, 3071.0)


@dataclass(frozen=True)
class SynthStudy:
    """One generated study, ready to be written."""

    index: int
    case_id: str  # also the synthetic PatientID, e.g. "SYN-000123"
    protocol: StudyProtocol
    volume_hu: Array  # float32 (slices, rows, columns)
    affine_lps: Array  # 4x4, voxel (i, j, k, 1) -> LPS mm
    label: Array  # uint8 (slices, rows, columns): 0 background, lesion id inside lesion n
    lung_side: Array  # uint8 (slices, rows, columns): 0 outside lungs, 1 right, 2 left
    lesions: list[Lesion]
    series_info: CTSeriesInfo


def case_id_for(index: int) -> str:
    """The case folder name and synthetic PatientID of study ``index``."""
    return f"SYN-{index:06d}"


def generate_study(config: SynthConfig, seed: int, index: int) -> SynthStudy:
    """Render study ``index`` of the dataset seeded ``seed`` (depends on nothing else)."""
    protocol = sample_protocol(config, seed, index)
    anatomy_rng = study_rng(seed, index, Stream.ANATOMY)
    z_top = round(float(anatomy_rng.uniform(-80.0, 80.0)), 2)
    grid = make_grid(protocol, z_top)
    coverage = protocol.n_slices * protocol.slice_thickness_mm
    phantom = sample_phantom(anatomy_rng, protocol.fov_mm, z_top, coverage)
    if protocol.contrast:
        phantom = with_contrast(phantom, anatomy_rng)
    oversample = 2 if protocol.matrix_size >= 256 else 1
    volume, lungs = render_anatomy(phantom, grid, oversample)
    vessels = _paint_trees(volume, grid, phantom, config, seed, index)
    label = np.zeros(grid.shape, np.uint8)
    lesions = _paint_lesions(
        volume,
        (label, lungs),
        grid,
        phantom,
        protocol,
        vessels,
        study_rng(seed, index, Stream.PLACEMENT),
    )
    _acquire(volume, grid, protocol, study_rng(seed, index, Stream.NOISE))
    case_id = case_id_for(index)
    return SynthStudy(
        index=index,
        case_id=case_id,
        protocol=protocol,
        volume_hu=volume,
        affine_lps=grid.affine_lps,
        label=label,
        lung_side=lungs,
        lesions=lesions,
        series_info=series_info(config, seed, index, protocol, anatomy_rng),
    )


def _paint_trees(
    volume: Array, grid: Grid, p: Phantom, config: SynthConfig, seed: int, index: int
) -> Tubes:
    """Arteries and veins (blood HU), then bronchial walls and air lumens."""
    trees = grow_vessel_trees(
        p,
        study_rng(seed, index, Stream.VESSELS),
        min_radius_mm=config.vessel_min_radius_mm,
        max_segments=config.vessel_max_segments,
    )
    paint_tubes(volume, grid, trees, p.blood_hu, darken=False)
    wall, lumen = bronchi_beside(p, trees)
    paint_tubes(volume, grid, wall, 30.0, darken=False)
    paint_tubes(volume, grid, lumen, -1000.0, darken=True)
    return trees


def _paint_lesions(
    volume: Array,
    masks: tuple[Array, Array],
    grid: Grid,
    p: Phantom,
    protocol: StudyProtocol,
    vessels: Tubes,
    rng: np.random.Generator,
) -> list[Lesion]:
    """Place and paint the planned lesions into ``volume`` and the label of ``masks``.

    ``masks`` is (label, lungs). A lesion that finds no room is dropped; what a lesion is attached
    to is read from the label, lung and vessel masks once it is painted.
    """
    label, lungs = masks
    if not protocol.lesions:
        return []
    depth_map = lung_depth_map(p, grid)
    voxel_ml = float(np.prod(grid.spacing_mm)) / 1000.0
    placed: list[LesionModel] = []
    lesions: list[Lesion] = []
    for plan in protocol.lesions:
        model = place_lesion(p, plan, rng, depth_map, vessels, placed)
        if model is None:
            continue
        lesion_id = len(placed) + 1
        n_voxels = paint_lesion(volume, label, grid, p, model, lesion_id)
        if n_voxels == 0:
            continue
        placed.append(model)
        touched = attachments(model, lesion_id, label, lungs, grid, vessels)
        lesions.append(to_manifest_lesion(model, lesion_id, n_voxels, voxel_ml, touched))
    return lesions


def _acquire(volume: Array, grid: Grid, protocol: StudyProtocol, rng: np.random.Generator) -> None:
    """Scanner blur (reconstruction kernel, slice profile) and correlated noise, in place."""
    sx = grid.spacing_mm[0]
    sigma = (0.35, protocol.kernel_sigma_mm / sx, protocol.kernel_sigma_mm / sx)
    delta = np.zeros((9, 21, 21), np.float32)
    delta[4, 10, 10] = 1.0
    gain = float(np.sqrt(np.sum(ndimage.gaussian_filter(delta, sigma) ** 2)))
    for k in range(volume.shape[0]):  # slice by slice keeps peak memory at one extra slice
        volume[k] += rng.standard_normal(volume.shape[1:], np.float32) * (
            protocol.noise_sd_hu / gain
        )
    ndimage.gaussian_filter(volume, sigma, output=volume)
    np.clip(volume, *HU_RANGE, out=volume)


def series_info(
    config: SynthConfig,
    seed: int,
    index: int,
    protocol: StudyProtocol,
    rng: np.random.Generator,
) -> CTSeriesInfo:
    """Patient, study and series attributes; UIDs derive from (config, seed, index)."""
    case_id = case_id_for(index)
    thickness = protocol.slice_thickness_mm
    return CTSeriesInfo(
        uid_seed=f"basira-synth:{config.digest()}:{seed}:{index}",
        patient_id=case_id,
        patient_name=f"SYNTHETIC^{case_id}",
        patient_sex=str(rng.choice(["F", "M"])),
        patient_age=f"{int(rng.integers(35, 86)):03d}Y",
        accession_number=f"SYNA{index:06d}",
        study_description="CT CHEST (synthetic)",
        series_description=f"Axial {thickness:.2f} mm {protocol.kernel_name}",
        patient_position=protocol.patient_position,
        slice_thickness_mm=thickness,
        convolution_kernel=protocol.kernel_name,
        model_name="basira-synth",
        extra={"PatientBirthDate": "", "PatientIdentityRemoved": "YES"},
    )
