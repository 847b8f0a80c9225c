"""Results hospitals can use: DICOM SEG, Comprehensive 3D SR (TID 1500), FHIR R4 and key images.

Which findings the outputs show is decided once, before any of them is built
(:func:`representable_findings`). Every writer takes one :class:`AnalysedStudy`;
:func:`write_outputs` writes the asked-for objects, reads each back and checks it against the
source geometry before releasing any (:mod:`pipelines.reports.selfcheck`), and
:func:`write_each_output` does the same object by object, withholding only the ones that fail.
See ``docs/outputs.md``.
"""

from pipelines.reports.fhir import build_fhir_bundle
from pipelines.reports.key_images import build_key_images
from pipelines.reports.representable import (
    LeftOutFinding,
    RepresentableFindings,
    representable_findings,
)
from pipelines.reports.seg import build_seg
from pipelines.reports.selfcheck import check_key_images, check_seg, check_sr
from pipelines.reports.sr import build_sr
from pipelines.reports.study import (
    AlgorithmInfo,
    AnalysedStudy,
    StudyConclusion,
    read_source_headers,
)
from pipelines.reports.writer import (
    OutputFormat,
    WithheldOutput,
    WrittenOutputs,
    write_each_output,
    write_outputs,
)

__all__ = [
    "AlgorithmInfo",
    "AnalysedStudy",
    "LeftOutFinding",
    "OutputFormat",
    "RepresentableFindings",
    "StudyConclusion",
    "WithheldOutput",
    "WrittenOutputs",
    "build_fhir_bundle",
    "build_key_images",
    "build_seg",
    "build_sr",
    "check_key_images",
    "check_seg",
    "check_sr",
    "read_source_headers",
    "representable_findings",
    "write_each_output",
    "write_outputs",
]
