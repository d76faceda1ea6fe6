"""The index: the node's database of studies, jobs, exports and associations.

This package is the only part of the node that imports SQLAlchemy.
"""

from dicom_node.index.models import ExportState, JobState
from dicom_node.index.queries import IndexQueries
from dicom_node.index.store import (
    TEXT_WIDTHS,
    ExportItem,
    ExportTarget,
    Index,
    IndexUnavailable,
    InstanceMeta,
    JobInput,
    Peer,
    PendingInstance,
    StudyState,
    index_text,
    shown_url,
    worker_name,
)

__all__ = [
    "TEXT_WIDTHS",
    "ExportItem",
    "ExportState",
    "ExportTarget",
    "Index",
    "IndexQueries",
    "IndexUnavailable",
    "InstanceMeta",
    "JobInput",
    "JobState",
    "Peer",
    "PendingInstance",
    "StudyState",
    "index_text",
    "shown_url",
    "worker_name",
]
