"""Routing: which engines an image goes to and where a job's results go."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

from dicom_node.config import RETURN_TO_SENDER, NodeConfig, Pipeline, Rule
from dicom_node.index import ExportTarget
from dicom_node.network import ULTRASOUND_SOP_CLASSES


class RoutingError(ValueError):
    """Results cannot be routed (e.g. return-to-sender without a known port)."""


@dataclass(frozen=True)
class RoutingAttributes:
    """The attributes of an instance that rules match on."""

    sop_class_uid: str
    modality: str | None
    body_part: str | None
    study_description: str | None
    calling_ae: str

    @classmethod
    def from_dataset(cls, ds: Dataset, calling_ae: str) -> RoutingAttributes:
        """Read the routing attributes of ``ds``; an ultrasound image without its
        Modality (Type 1, left out by some devices) is ``US``, as its class says."""

        def text(keyword: str) -> str | None:
            value = ds.get(keyword)
            return str(value).strip() or None if value is not None else None

        sop_class_uid = str(ds.get("SOPClassUID", ""))
        implied = "US" if sop_class_uid in ULTRASOUND_SOP_CLASSES else None
        return cls(
            sop_class_uid=sop_class_uid,
            modality=text("Modality") or implied,
            body_part=text("BodyPartExamined"),
            study_description=text("StudyDescription"),
            calling_ae=calling_ae,
        )


def _in(value: str | None, allowed: Sequence[str] | None) -> bool:
    if allowed is None:
        return True
    return value is not None and value.upper() in {a.upper() for a in allowed}


def rule_matches(rule: Rule, attrs: RoutingAttributes) -> bool:
    """Whether every criterion of ``rule`` holds for ``attrs``."""
    match = rule.match
    if match.study_description is not None and not re.search(
        match.study_description, attrs.study_description or "", re.IGNORECASE
    ):
        return False
    return (
        _in(attrs.modality, match.modality)
        and _in(attrs.body_part, match.body_part)
        and _in(attrs.sop_class_uid, match.sop_class)
        and _in(attrs.calling_ae, match.calling_ae)
    )


def engines_for(pipeline: Pipeline, attrs: RoutingAttributes) -> tuple[str, ...]:
    """Engines of the first rule that matches, or ``()`` when none does."""
    for rule in pipeline.rules:
        if rule_matches(rule, attrs):
            return tuple(rule.engines)
    return ()


def export_targets(
    config: NodeConfig, pipeline: Pipeline, calling_ae: str, calling_host: str
) -> list[ExportTarget]:
    """Resolve a pipeline's destinations for a study sent by ``calling_ae``.

    Raises
    ------
    RoutingError
        If the pipeline returns to sender but the sender has no known port.
    """
    targets = []
    for name in pipeline.destinations:
        if name == RETURN_TO_SENDER:
            caller = next(
                (
                    c
                    for c in pipeline.allowed_callers or []
                    if c.ae_title == calling_ae
                    and c.port is not None
                    and (c.host is None or c.host == calling_host)
                ),
                None,
            )
            if caller is None or caller.port is None:
                raise RoutingError(
                    f"return-to-sender: no port configured for calling AE {calling_ae!r}"
                )
            targets.append(
                ExportTarget(
                    destination=f"{RETURN_TO_SENDER}:{calling_ae}",
                    ae_title=calling_ae,
                    host=caller.host or calling_host,
                    port=caller.port,
                )
            )
            continue
        destination = config.destination(name)
        if destination is None:
            raise RoutingError(f"unknown destination {name!r}")
        targets.append(
            ExportTarget(
                destination=destination.name,
                ae_title=destination.ae_title,
                host=destination.host,
                port=destination.port,
                include_overlay=destination.overlay_capture,
            )
        )
    return targets
