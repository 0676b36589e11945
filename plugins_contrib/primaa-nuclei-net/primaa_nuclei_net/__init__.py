"""A learned nucleus-centre detector for H&E: primaa algorithm ``poi_detection_net``."""

__version__ = "0.4.0"
