"""Image quality control for H&E scans, as a primaa plugin (algorithm ``image_qc``)."""

__version__ = "0.2.0"
