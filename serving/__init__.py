"""The Basira service: hospitals submit studies (upload, DICOMweb STOW-RS, DICOM C-STORE) and
fetch results (JSON, DICOM SEG and SR, FHIR); a worker analyses them with the shipped model."""
