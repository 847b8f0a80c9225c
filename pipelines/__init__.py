"""Basira's library: DICOM I/O, synthetic data, datasets, training, evaluation and inference.

Never imports :mod:`serving`; heavy optional libraries are imported inside the module that
needs them so that reading DICOM does not import torch.
"""
