"""datasetagent: tell it the image dataset you want, get back a ready-to-train dataset."""

__version__ = "0.1.0"
