"""Evaluation: FROC/CPM, study-level ROC, Dice, calibration metrics and bootstrap intervals as
pure functions (``froc``, ``classification``, ``segmentation``, ``calibration``, ``bootstrap``),
tied together into one ``metrics.json`` by :mod:`pipelines.evaluation.report`; running a model
over prepared cases (``inference``, ``runs``) and fitting a bundle's calibration
(``calibrate``). See ``docs/evaluation.md``.
"""
