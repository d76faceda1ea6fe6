"""Ultrasound AI engines: liver and breast lesions, cardiac function.

Importing this package is cheap and does not import torch; the result
builders import :mod:`inference.findings` and :mod:`inference.geometry` only.
"""
