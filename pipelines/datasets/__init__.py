"""Datasets: manifests of studies and lesions, adapters for public layouts (LUNA16, MSD, DICOM
SEG), splits, and ``prepare``, which turns a manifest into the preprocessed cache training and
evaluation read."""
