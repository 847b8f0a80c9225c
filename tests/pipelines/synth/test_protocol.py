"""Sampling of protocols and lesion plans, without rendering."""

from __future__ import annotations

from pipelines.synth.config import SynthConfig
from pipelines.synth.protocol import sample_protocol


def test_about_a_third_of_studies_have_no_lesion() -> None:
    config = SynthConfig()
    protocols = [sample_protocol(config, 5, i) for i in range(300)]
    share = sum(not p.lesions for p in protocols) / len(protocols)
    assert 0.25 < share < 0.43
    assert max(len(p.lesions) for p in protocols) == 4


def test_protocols_stay_in_the_configured_ranges() -> None:
    config = SynthConfig()
    for i in range(100):
        p = sample_protocol(config, 9, i)
        assert 0.6 <= p.pixel_spacing_mm <= 0.9 and 0.8 <= p.slice_thickness_mm <= 3.0
        assert 80 <= p.n_slices <= 400 and p.patient_position in {"HFS", "FFS"}
        for lesion in p.lesions:
            assert 3.0 <= lesion.diameter_mm <= 30.0


def test_protocol_depends_only_on_seed_and_index() -> None:
    config = SynthConfig()
    assert sample_protocol(config, 1, 7) == sample_protocol(config, 1, 7)
    assert sample_protocol(config, 1, 7) != sample_protocol(config, 2, 7)
