"""Evaluation of frozen encoders: extract features once, then read them out with a linear probe
at several label fractions and a weighted kNN probe, and report the numbers as tables and JSON."""

from .features import extract_features, load_features, save_features, stack_image_label
from .knn import knn_probe, knn_scores
from .linear import C_GRID, linear_probe
from .metrics import accuracy, auroc
from .report import format_table, probe_rows, summarise, write_json
from .subsample import nested_subsamples, stratified_subsample

__all__ = [
    "C_GRID",
    "accuracy",
    "auroc",
    "extract_features",
    "format_table",
    "knn_probe",
    "knn_scores",
    "linear_probe",
    "load_features",
    "probe_rows",
    "save_features",
    "stack_image_label",
    "nested_subsamples",
    "stratified_subsample",
    "summarise",
    "write_json",
]
