"""Shipped model files (installed as the package `anr_codec.pretrained`)."""
