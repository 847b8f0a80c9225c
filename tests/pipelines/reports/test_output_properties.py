"""Property tests of every output writer (issue 15): hypothesis generates series and findings the
writers have never seen (every patient position, oblique and gantry-tilted stacks, 1 to 600
slices, non-square pixels, implicit and explicit VR; single-voxel, sub-voxel, edge and corner,
touching and overlapping findings, up to the 255 a SEG can hold). Either the series is refused
with a documented code, or every output is written, read back by highdicom and fhir.resources,
and agrees with the findings the result JSON reports; a finding no output can show is in none.
No other outcome.

Example counts come from the hypothesis profile (tests/conftest.py: ``dev`` locally, ``ci``
when ``CI`` is set). Images have at least 3 x 3 pixels: highdicom 0.28.2 mis-packs BINARY SEG
frames of fewer than 8 pixels, which the self-check refuses (test_selfcheck.py covers that case).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import event, given, note
from hypothesis import strategies as st

from pipelines.dicom.read import read_series_volume
from pipelines.errors import BasiraError
from pipelines.findings import Finding
from pipelines.reports import (
    AnalysedStudy,
    OutputFormat,
    StudyConclusion,
    read_source_headers,
    representable_findings,
    write_each_output,
)
from pipelines.volume import Volume
from tests import reason_ledger
from tests.pipelines.reports.conftest import ALGORITHM, CREATED
from tests.pipelines.reports.readback import ExpectedFinding, check_released_outputs
from tests.pipelines.series_strategies import SeriesSpec, series_specs, write_spec

DOCUMENTED = reason_ledger.documented_codes(reason_ledger.ERRORS_MD.read_text(encoding="utf-8"))
KINDS = ("voxel", "corner", "box", "box", "sub-voxel")
#: Finding counts drawn: mostly a few, sometimes none, and the most a SEG can label.
COUNTS = (0, 1, 1, 2, 2, 3, 4, 6, 10, 255)


@dataclass(frozen=True)
class PaintedFinding:
    """A finding as generated: its id, where it was painted (``None``: sub-voxel, no voxel at
    all, only a centre), and its calibrated confidence."""

    id: int
    box_kji: tuple[slice, slice, slice] | None
    centre_ijk: tuple[float, float, float]
    confidence: float


@st.composite
def painted_findings(
    draw: st.DrawFn, shape: tuple[int, int, int]
) -> tuple[np.ndarray, list[PaintedFinding]]:
    """A ``[k, j, i]`` label mask and its findings; later findings overwrite earlier ones where
    they overlap (so some end with no voxel), and neighbours touch."""
    mask = np.zeros(shape, dtype=np.uint8)
    painted = []
    for finding_id in range(1, draw(st.sampled_from(COUNTS)) + 1):
        kind = draw(st.sampled_from(KINDS))
        confidence = draw(st.floats(0.0, 1.0, allow_nan=False))
        if kind == "sub-voxel":
            centre = tuple(draw(st.floats(-0.5, n - 0.5)) for n in reversed(shape))
            painted.append(PaintedFinding(finding_id, None, centre, confidence))  # type: ignore[arg-type]
            continue
        if kind == "corner":
            start = [draw(st.sampled_from([0, n - 1])) for n in shape]
        else:
            start = [draw(st.integers(0, n - 1)) for n in shape]
        size = [1, 1, 1] if kind != "box" else [draw(st.integers(1, 4)) for _ in shape]
        box = tuple(slice(s, min(s + e, n)) for s, e, n in zip(start, size, shape, strict=True))
        mask[box] = finding_id
        centre_kji = [(b.start + b.stop - 1) / 2 for b in box]
        painted.append(
            PaintedFinding(finding_id, box, tuple(reversed(centre_kji)), confidence)  # type: ignore[arg-type]
        )
    return mask, painted


def _finding(painted: PaintedFinding, volume: Volume) -> Finding:
    voxel_ml = abs(float(np.linalg.det(volume.affine_lps[:3, :3]))) / 1000.0
    n_voxels = (
        0 if painted.box_kji is None else int(np.prod([b.stop - b.start for b in painted.box_kji]))
    )
    volume_ml = max(n_voxels, 0.3) * voxel_ml  # a sub-voxel finding is smaller than one voxel
    centre_lps = volume.ijk_to_lps(np.asarray(painted.centre_ijk, float))
    return Finding(
        id=painted.id,
        center_ijk=painted.centre_ijk,
        center_lps_mm=(float(centre_lps[0]), float(centre_lps[1]), float(centre_lps[2])),
        diameter_mm=float(np.cbrt(6.0 * volume_ml * 1000.0 / np.pi)),
        volume_ml=volume_ml,
        score=painted.confidence,
        confidence=painted.confidence,
    )


@given(spec=series_specs(matrix=(3, 12)), data=st.data())
def test_every_output_of_a_generated_study_reads_back_and_agrees_or_the_series_is_refused(
    spec: SeriesSpec, data: st.DataObject
) -> None:
    note(repr(spec))  # hypothesis' own printout leaves a dataclass argument empty
    with tempfile.TemporaryDirectory(prefix="basira-prop-") as root:
        shape = (spec.n_slices, spec.rows, spec.columns)
        k, j, i = np.indices(shape)
        paths = write_spec(
            spec, Path(root) / "in", (-1000 + 7 * k + 3 * j + i).astype(np.float32), uid_seed=root
        )
        try:
            volume = read_series_volume(paths)
        except BasiraError as refused:  # a coded, documented refusal is the other outcome
            assert refused.code in DOCUMENTED, refused.code
            event(f"series refused: {refused.code}")
            return
        event("series read")
        mask, painted = data.draw(painted_findings(volume.shape))
        _write_and_check(volume, paths, mask, [_finding(p, volume) for p in painted], Path(root))


def _write_and_check(
    volume: Volume, paths: list[Path], mask: np.ndarray, findings: list[Finding], root: Path
) -> None:
    shown = representable_findings(findings, mask)
    event(f"findings left out: {'some' if shown.left_out else 'none'}")
    with_voxels = {f.id for f in findings if np.any(mask == f.id)}
    assert {f.id for f in shown.findings} == with_voxels
    assert {item.finding.id for item in shown.left_out} == {f.id for f in findings} - with_voxels
    assert all(item.code == "output.finding_not_representable" for item in shown.left_out)

    best = sorted(shown.findings, key=lambda f: -(f.confidence or 0.0))[:5]
    study = AnalysedStudy(
        volume=volume,
        source_headers=read_source_headers(paths),
        findings_mask=shown.mask_kji,
        findings=shown.findings,
        algorithm=ALGORITHM,
        conclusion=StudyConclusion("tumour suspected", probability=0.7, operating_point=0.4),
        key_image_ids=frozenset(f.id for f in best),
        created=CREATED,
    )
    written = write_each_output(study, root / "out", list(OutputFormat))
    assert written.withheld == []  # a representable finding never costs an output
    expected = [
        ExpectedFinding(
            id=f.id,
            center_lps_mm=f.center_lps_mm,
            diameter_mm=f.diameter_mm,
            volume_ml=f.volume_ml,
            confidence=float(f.confidence or 0.0),
            tracking_uid=study.tracking_uid(f),
            mask_kji=shown.mask_kji == f.id,
        )
        for f in shown.findings
    ]
    check_released_outputs(
        root / "out",
        volume.provenance.study_instance_uid,
        list(volume.provenance.sop_instance_uids),
        expected,
        {f.id for f in best},
    )
