"""Seeded synthetic chest-CT studies with exact ground truth.

The generator draws a scanner protocol, a chest phantom (body wall, ribs, spine, mediastinum,
heart, lungs with branching vessel and airway trees, table) and 0-4 lung lesions per study, renders
them in Hounsfield units and writes each study as a real DICOM CT series with its label mask
(NIfTI and DICOM SEG), a lesion list and an entry in a dataset manifest. Study ``i`` depends only on
``(config, seed, i)``, so the number of worker processes never changes a byte of the output.
"""

from pipelines.synth.config import SynthConfig, load_synth_config
from pipelines.synth.dataset import generate_dataset
from pipelines.synth.study import SynthStudy, generate_study

__all__ = ["SynthConfig", "SynthStudy", "generate_dataset", "generate_study", "load_synth_config"]
