"""The DICOM boundary: index any input, pick analysable series, and build HU volumes."""
