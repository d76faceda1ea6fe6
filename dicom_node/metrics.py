"""Prometheus metrics of the node (no patient data in any label).

Extra receiver processes (``receivers: N``) count what they receive in their own
copy of these counters; the main process adds their values to its own when it
is scraped (:func:`exposition`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

REGISTRY = CollectorRegistry()

ASSOCIATIONS = Counter(
    "dicom_node_associations",
    "Association requests by called AE and outcome.",
    ["called_ae", "outcome"],
    registry=REGISTRY,
)
INSTANCES = Counter(
    "dicom_node_instances_received",
    "Instances stored by called AE (duplicates excluded).",
    ["called_ae"],
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "dicom_node_duplicate_instances",
    "Instances received again with a known SOP Instance UID.",
    registry=REGISTRY,
)
STORE_FAILURES = Counter(
    "dicom_node_store_failures",
    "C-STORE requests answered with a failure status, by reason.",
    ["reason"],
    registry=REGISTRY,
)
BYTES = Counter("dicom_node_bytes_received", "Bytes of instances stored.", registry=REGISTRY)
JOBS = Counter(
    "dicom_node_jobs_finished", "Jobs finished by final state.", ["state"], registry=REGISTRY
)
ENGINE_SECONDS = Histogram(
    "dicom_node_engine_seconds",
    "Time to analyse one image, by engine.",
    ["engine"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
ANALYSED_AHEAD = Counter(
    "dicom_node_images_analysed_ahead",
    "Images analysed while their study was still arriving (results kept for its job).",
    registry=REGISTRY,
)
STUDIES_PURGED = Counter(
    "dicom_node_studies_purged",
    "Studies removed from the spool and the index after their retention period.",
    registry=REGISTRY,
)
EXPORTS = Counter(
    "dicom_node_exports",
    "Export attempts by destination and outcome.",
    ["destination", "outcome"],
    registry=REGISTRY,
)
SPOOL_FREE = Gauge(
    "dicom_node_spool_free_bytes", "Free bytes on the spool's file system.", registry=REGISTRY
)
ADMISSION_REFUSED = Gauge(
    "dicom_node_refusing_for_disk",
    "1 while new data is refused because free disk is below the floor.",
    registry=REGISTRY,
)
JOBS_BY_STATE = Gauge(
    "dicom_node_jobs",
    "Jobs in the index by state (refreshed on scrape).",
    ["state"],
    registry=REGISTRY,
)
EXPORTS_BY_STATE = Gauge(
    "dicom_node_exports_by_state",
    "Exports in the index by state; 'failed' is the error queue (refreshed on scrape).",
    ["state"],
    registry=REGISTRY,
)
STUDIES_RECEIVING = Gauge(
    "dicom_node_studies_receiving",
    "Studies with instances not yet handed to a job (refreshed on scrape).",
    registry=REGISTRY,
)
CONFIG_CHANGES = Counter(
    "dicom_node_config_changes",
    "Configuration changes applied by the admin API or CLI, by kind.",
    ["kind"],
    registry=REGISTRY,
)
RECEIVING_PROCESSES = Gauge(
    "dicom_node_receiving_processes",
    "Processes receiving on the DICOM port, the main one included (refreshed on scrape).",
    registry=REGISTRY,
)
CONNECTIONS_REFUSED = Counter(
    "dicom_node_connections_refused",
    "TCP connections closed at once because their address held too many.",
    registry=REGISTRY,
)


SampleKey = tuple[str, tuple[tuple[str, str], ...]]
"""A counter sample: its name (``..._total``) and its sorted label pairs."""


def sample_key(sample: Sample) -> SampleKey:
    """The key of ``sample`` in :func:`counter_values`."""
    return sample.name, tuple(sorted(sample.labels.items()))


def counter_values(registry: CollectorRegistry = REGISTRY) -> dict[SampleKey, float]:
    """The ``_total`` sample of every counter (and label set) in ``registry``."""
    return {
        sample_key(sample): sample.value
        for family in registry.collect()
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _with_others(family: Metric, others: dict[SampleKey, float]) -> list[Sample]:
    """The samples of counter ``family`` with ``others`` added to its ``_total`` samples.

    Label sets only ``others`` has are appended.  Used entries are removed from ``others``.
    """
    samples = []
    for sample in family.samples:
        samples.append(sample._replace(value=sample.value + others.pop(sample_key(sample), 0.0)))
    total = f"{family.name}_total"
    for key in sorted(k for k in others if k[0] == total):
        samples.append(Sample(total, dict(key[1]), others.pop(key)))
    return samples


class _Summed(Collector):
    """The node's registry with other processes' counter values added."""

    def __init__(self, others: dict[SampleKey, float]) -> None:
        self._others = others

    def collect(self) -> Iterator[Metric]:
        others = dict(self._others)
        for family in REGISTRY.collect():
            if family.type == "counter":
                family.samples = _with_others(family, others)
            yield family


def exposition(others: dict[SampleKey, float]) -> bytes:
    """The node's metrics in the Prometheus text format.

    Parameters
    ----------
    others:
        Counter values of the extra receiver processes (summed over them), as
        :func:`counter_values` returns them there; each is added to this
        process's value of the same sample, or listed on its own.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Summed(others))
    return generate_latest(registry)
