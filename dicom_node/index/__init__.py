"""The index: the node's database of studies, jobs, exports and associations.

This package is the only part of the node that imports SQLAlchemy.
"""

from dicom_node.index.models import ExportState, JobState
from dicom_node.index.queries import IndexQueries
from dicom_node.index.store import (
    ExportItem,
    ExportTarget,
    Index,
    InstanceMeta,
    JobInput,
    Peer,
    PendingInstance,
    StudyState,
    worker_name,
)

__all__ = [
    "ExportItem",
    "ExportState",
    "ExportTarget",
    "Index",
    "IndexQueries",
    "InstanceMeta",
    "JobInput",
    "JobState",
    "Peer",
    "PendingInstance",
    "StudyState",
    "worker_name",
]
