"""DICOM network node: receive, spool, index, complete, route, dispatch, export."""

__version__ = "0.1.0"
