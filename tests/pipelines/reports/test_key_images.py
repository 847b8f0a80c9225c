"""Key images: one Secondary Capture per finding, read back and compared with the source."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from pipelines.reports import build_key_images
from pipelines.reports.key_images import caption, patient_orientation, render_key_image


@pytest.mark.parametrize("step_mm", [-1.25, 1.25], ids=["head-first", "feet-first"])
def test_key_images_reference_the_slice_through_each_finding(make_study, tmp_path, step_mm):
    study = make_study(step_mm=step_mm, shuffle=True)
    uids = study.volume.provenance.sop_instance_uids
    for n, (image, finding) in enumerate(
        zip(build_key_images(study), study.ordered_findings(), strict=True)
    ):
        image.save_as(tmp_path / f"key{n}.dcm", enforce_file_format=True)
        ds = pydicom.dcmread(tmp_path / f"key{n}.dcm")
        k = round(finding.center_ijk[2])
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uids[k]
        assert ds.StudyInstanceUID == study.volume.provenance.study_instance_uid
        assert (ds.PatientID, str(ds.PatientName)) == ("ANON", "Doe^Jane")
        assert ds.BurnedInAnnotation == "YES"
        assert ds.PhotometricInterpretation == "RGB" and ds.Modality == "OT"
        assert ds.pixel_array.shape[1] >= 512
        yellow = np.all(ds.pixel_array == (255, 230, 0), axis=-1)
        assert yellow.any(), "the finding is outlined"


def test_caption_states_finding_confidence_model_and_review(make_study):
    study = make_study()
    finding = study.ordered_findings()[0]
    assert caption(study, finding) == (
        "AI finding 1, confidence 0.80, basira-unet 1.2.0, not for diagnosis without review"
    )


def test_render_outlines_the_mask_edge_only_and_burns_text_below():
    slice_hu = np.full((16, 12), -800.0, dtype=np.float32)
    mask = np.zeros((16, 12), dtype=bool)
    mask[4:10, 3:9] = True
    rgb = render_key_image(slice_hu, mask, "AI finding 1", min_width_px=120)
    assert rgb.dtype == np.uint8 and rgb.shape[1] == 120
    image_rows = 16 * 10
    yellow = np.all(rgb[:image_rows] == (255, 230, 0), axis=-1)
    assert yellow[40, 30:90].all() and not yellow[70, 50:70].any()
    assert rgb[image_rows:].max() > 200, "caption pixels below the image"


def test_patient_orientation_follows_the_direction_cosines():
    assert patient_orientation([1, 0, 0, 0, 1, 0]) == ("L", "P")
    assert patient_orientation([-1, 0, 0, 0, 0, -1]) == ("R", "F")
    # oblique (decubitus, rotated in-plane): the closest axis, one letter as highdicom requires
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert patient_orientation([c, -s, 0, s, c, 0]) == ("L", "P")
    assert patient_orientation([0.1, -0.99, 0, 0.99, 0.1, 0]) == ("A", "L")
