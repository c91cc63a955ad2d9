"""Numeric precision: the names (``names``, torch-free) and what the hardware computes (``hardware``)."""
