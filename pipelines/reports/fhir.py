"""FHIR R4: a ``collection`` Bundle of one DiagnosticReport and one Observation per finding.

Plain JSON-ready dicts (no FHIR library). Resources are linked by ``urn:uuid`` full URLs derived
from the series and the model, so rewriting the same result gives the same bundle. The imaging
study is referenced by its StudyInstanceUID as an identifier (system ``urn:dicom:uid``, value
``urn:oid:<uid>``), which is how an ImagingStudy is found without knowing the server's id.
Status is ``preliminary``: the findings are an AI proposal until a radiologist reviews them.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydicom.sr.coding import Code

from pipelines.findings import Finding
from pipelines.reports import codes as basira_codes
from pipelines.reports.study import AnalysedStudy, confidence_of

__all__ = ["DIAGNOSTIC_IMAGING_REPORT", "build_fhir_bundle", "codeable", "imaging_study_reference"]

JsonDict = dict[str, Any]
#: LOINC 18748-4 "Diagnostic imaging study", the DiagnosticReport code.
DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic imaging study")
_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


def codeable(code: Code, text: str | None = None) -> JsonDict:
    """A FHIR CodeableConcept for a DICOM-style code (scheme designator -> FHIR system)."""
    coding = {
        "system": basira_codes.FHIR_SYSTEMS[code.scheme_designator],
        "code": code.value,
        "display": code.meaning,
    }
    return {"coding": [coding], "text": text or code.meaning}


def imaging_study_reference(study_instance_uid: str) -> JsonDict:
    """A logical reference to the ImagingStudy with this StudyInstanceUID."""
    return {
        "type": "ImagingStudy",
        "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study_instance_uid}"},
    }


def build_fhir_bundle(study: AnalysedStudy) -> JsonDict:
    """The Bundle (type ``collection``): the DiagnosticReport first, then its Observations."""
    observations = [
        (_full_url(study, f"finding-{f.id}"), _observation(study, f))
        for f in study.ordered_findings()
    ]
    report = _diagnostic_report(study, [url for url, _ in observations])
    entries = [(_full_url(study, "report"), report), *observations]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": study.created.isoformat(),
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }


def _full_url(study: AnalysedStudy, part: str) -> str:
    name = f"{study.volume.provenance.series_instance_uid}/{study.algorithm.label}/{part}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, name)}"


def _diagnostic_report(study: AnalysedStudy, observation_urls: list[str]) -> JsonDict:
    provenance = study.volume.provenance
    report: JsonDict = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [{"coding": [{"system": _V2_0074, "code": "RAD", "display": "Radiology"}]}],
        "code": codeable(DIAGNOSTIC_IMAGING_REPORT),
        "issued": study.created.isoformat(),
        "performer": [{"display": f"{study.algorithm.manufacturer} {study.algorithm.label}"}],
        "imagingStudy": [imaging_study_reference(provenance.study_instance_uid)],
        "result": [{"reference": url} for url in observation_urls],
        "conclusion": _conclusion(study),
    }
    subject = _subject(study)
    if subject:
        report["subject"] = subject
    return report


def _conclusion(study: AnalysedStudy) -> str:
    count = f"{len(study.findings)} AI finding(s)"
    suffix = f" ({study.algorithm.label}); not for diagnosis without review."
    if study.conclusion is None:
        return count + suffix
    c = study.conclusion
    return (
        f"{c.label}: probability {c.probability:.2f} "
        f"(operating point {c.operating_point:.2f}); {count}{suffix}"
    )


def _subject(study: AnalysedStudy) -> JsonDict | None:
    """The patient by the source's PatientID, when it has one (never a made-up identifier)."""
    patient_id = str(study.reference_header.get("PatientID", "") or "")
    return {"identifier": {"value": patient_id}} if patient_id else None


def _observation(study: AnalysedStudy, finding: Finding) -> JsonDict:
    provenance = study.volume.provenance
    x, y, z = finding.center_lps_mm
    observation: JsonDict = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [{"coding": [{"system": _CATEGORY_SYSTEM, "code": "imaging"}]}],
        "code": codeable(basira_codes.FINDING_TYPE, f"AI finding {finding.id}: lung nodule"),
        "bodySite": codeable(basira_codes.LUNG),
        "issued": study.created.isoformat(),
        "method": {"text": f"{study.algorithm.manufacturer} {study.algorithm.label}"},
        "derivedFrom": [imaging_study_reference(provenance.study_instance_uid)],
        "component": [
            _quantity(basira_codes.DIAMETER, finding.diameter_mm, "mm"),
            _quantity(basira_codes.VOLUME, finding.volume_ml, "mL"),
            _quantity(basira_codes.CERTAINTY_OF_FINDING, confidence_of(finding), "1"),
        ],
        "note": [
            {
                "text": f"Centre (LPS, mm) {x:.1f}, {y:.1f}, {z:.1f} in frame of reference "
                f"{provenance.frame_of_reference_uid}; tracking UID "
                f"{study.tracking_uid(finding)}."
            }
        ],
    }
    subject = _subject(study)
    if subject:
        observation["subject"] = subject
    return observation


def _quantity(code: Code, value: float, ucum: str) -> JsonDict:
    """A component with a UCUM quantity (the UCUM code doubles as the human-readable unit)."""
    return {
        "code": codeable(code),
        "valueQuantity": {
            "value": round(float(value), 6),
            "unit": ucum,
            "system": basira_codes.FHIR_SYSTEMS["UCUM"],
            "code": ucum,
        },
    }
