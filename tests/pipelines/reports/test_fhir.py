"""FHIR R4 bundle: the required R4 fields, checked by hand (no schema download, no network)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipelines.reports import AnalysedStudy, build_fhir_bundle

UCUM = "http://unitsofmeasure.org"
#: R4 cardinality 1..1 / 1..* fields of the resources we write, and the allowed status codes.
REQUIRED = {"DiagnosticReport": ("status", "code"), "Observation": ("status", "code")}
STATUSES = {"registered", "partial", "preliminary", "final", "amended", "corrected", "cancelled"}


def check_codeable_concept(concept: dict[str, Any]) -> None:
    assert concept.get("coding") or concept.get("text")
    for coding in concept.get("coding", []):
        assert coding["system"].startswith("http") and coding["code"]


def check_r4_bundle(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fail on anything R4 requires that the bundle lacks; return resources by fullUrl."""
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    resources = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"].startswith("urn:uuid:")
        for field in REQUIRED[resource["resourceType"]]:
            assert resource.get(field), f"{resource['resourceType']}.{field} is required"
        assert resource["status"] in STATUSES
        check_codeable_concept(resource["code"])
        resources[entry["fullUrl"]] = resource
    for resource in resources.values():
        for reference in resource.get("result", []):
            assert reference["reference"] in resources, "result must resolve inside the bundle"
    json.dumps(bundle)  # JSON-serialisable as is
    return resources


def test_bundle_has_a_report_and_one_observation_per_finding(make_study):
    study = make_study()
    resources = list(check_r4_bundle(build_fhir_bundle(study)).values())
    report, observations = resources[0], resources[1:]
    assert report["resourceType"] == "DiagnosticReport"
    assert [o["resourceType"] for o in observations] == ["Observation"] * 2
    uid = study.volume.provenance.study_instance_uid
    assert report["imagingStudy"] == [
        {
            "type": "ImagingStudy",
            "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
        }
    ]
    assert report["conclusion"].startswith("tumour suspected: probability 0.83")
    assert report["subject"] == {"identifier": {"value": "ANON"}}


def test_observation_components_carry_diameter_volume_and_confidence(make_study):
    study = make_study()
    observation = list(check_r4_bundle(build_fhir_bundle(study)).values())[1]
    finding = study.ordered_findings()[0]
    assert observation["bodySite"]["coding"][0]["code"] == "39607008"
    assert observation["derivedFrom"][0]["identifier"]["system"] == "urn:dicom:uid"
    values = {}
    for component in observation["component"]:
        check_codeable_concept(component["code"])
        quantity = component["valueQuantity"]
        assert quantity["system"] == UCUM
        values[component["code"]["coding"][0]["display"]] = (quantity["value"], quantity["code"])
    assert values["Diameter"] == (round(finding.diameter_mm, 6), "mm")
    assert values["Volume"] == (round(finding.volume_ml, 6), "mL")
    assert values["Certainty of Finding"] == (round(finding.confidence, 6), "1")


def test_bundle_of_a_study_without_findings_says_so(make_study):
    study = make_study()
    empty = AnalysedStudy(
        volume=study.volume,
        source_headers=study.source_headers,
        findings_mask=np.zeros_like(study.findings_mask),
        findings=[],
        algorithm=study.algorithm,
    )
    resources = list(check_r4_bundle(build_fhir_bundle(empty)).values())
    assert len(resources) == 1 and resources[0]["result"] == []
    assert resources[0]["conclusion"].startswith("0 AI finding(s)")


def test_bundle_is_the_same_when_written_twice(make_study):
    study = make_study()
    assert build_fhir_bundle(study) == build_fhir_bundle(study)
