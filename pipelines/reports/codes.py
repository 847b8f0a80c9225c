"""The coded concepts every output uses, defined once so SEG, SR and FHIR say the same thing.

Only codes that exist in the published terminologies (SNOMED CT, DICOM DCM, UCUM, LOINC) are
used; none is invented. FHIR needs each as ``system`` + ``code``; :data:`FHIR_SYSTEMS` maps the
DICOM coding scheme designators to the FHIR system URIs.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "CERTAINTY_OF_FINDING",
    "DIAMETER",
    "FHIR_SYSTEMS",
    "FINDING_CATEGORY",
    "FINDING_TYPE",
    "LUNG",
    "UNIT_MILLILITRE",
    "UNIT_MILLIMETRE",
    "UNIT_ONE",
    "VOLUME",
]

#: Segmented property category / SR finding category: SCT 49755003.
FINDING_CATEGORY: Code = codes.SCT.MorphologicallyAbnormalStructure
#: Segmented property type / SR finding type: SCT 27925004 "Nodule", with the site below.
FINDING_TYPE: Code = codes.SCT.Nodule
#: Anatomic region and finding site: SCT 39607008 "Lung".
LUNG: Code = codes.SCT.Lung
#: SCT 81827009: diameter of the sphere of equal volume.
DIAMETER: Code = codes.SCT.Diameter
#: SCT 118565006: volume of the segmented voxels.
VOLUME: Code = codes.SCT.Volume
#: DCM 111012 "Certainty of Finding": the calibrated probability that the finding is real.
CERTAINTY_OF_FINDING: Code = codes.DCM.CertaintyOfFinding

UNIT_MILLIMETRE: Code = codes.UCUM.Millimeter
UNIT_MILLILITRE = Code("ml", "UCUM", "milliliter")
#: UCUM "1", the unit of a dimensionless ratio such as a probability.
UNIT_ONE: Code = codes.UCUM.NoUnits

FHIR_SYSTEMS: dict[str, str] = {
    "SCT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "UCUM": "http://unitsofmeasure.org",
    "LN": "http://loinc.org",
}
