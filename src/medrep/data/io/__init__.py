"""Readers: image files into sample dicts (PNG/JPEG, NIfTI, DICOM files and series), intensity
scaling, report text, atlas label lists. Nothing here knows about data sets or recipes."""
