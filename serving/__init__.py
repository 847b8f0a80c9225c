"""Basira's FastAPI service (hospital API, DICOM listener, review UI); depends on pipelines."""
