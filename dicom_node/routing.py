"""Routing: which engines an image goes to and where a job's results go."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydicom import Dataset

from dicom_node.config import RETURN_TO_SENDER, NodeConfig, Pipeline, Rule
from dicom_node.index import ExportTarget
from dicom_node.network import ULTRASOUND_SOP_CLASSES, same_address

LOGGER = structlog.get_logger(__name__)


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
    config: NodeConfig, pipeline: Pipeline, senders: Sequence[tuple[str, str]]
) -> list[ExportTarget]:
    """Resolve a pipeline's destinations for a study sent by ``senders``, the
    ``(calling AE, host)`` of each device that sent some of it.

    ``return-to-sender`` goes to every sender whose port the pipeline's caller list
    gives; a sender without one is skipped and logged, while some destination is left.

    Raises
    ------
    RoutingError
        If a destination is unknown, or if returning to the senders was the only
        destination and none of them has a known port.
    """
    targets = []
    for name in pipeline.destinations:
        if name == RETURN_TO_SENDER:
            targets.extend(_return_targets(pipeline, senders))
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
    if not targets and pipeline.destinations:
        names = ", ".join(ae for ae, _ in senders)
        raise RoutingError(f"return-to-sender: no port configured for calling AE {names}")
    return targets


def _return_targets(pipeline: Pipeline, senders: Sequence[tuple[str, str]]
                    ) -> list[ExportTarget]:
    """One target per sender (by AE title) whose port the caller list gives."""
    targets: dict[str, ExportTarget] = {}
    for calling_ae, calling_host in senders:
        caller = next(
            (
                c
                for c in pipeline.allowed_callers or []
                if c.ae_title == calling_ae
                and c.port is not None
                and (c.host is None or same_address(c.host, calling_host))
            ),
            None,
        )
        if caller is None or caller.port is None:
            LOGGER.warning("return_to_sender_skipped", calling_ae=calling_ae,
                           reason="no port configured for this caller")
            continue
        targets.setdefault(calling_ae, ExportTarget(
            destination=f"{RETURN_TO_SENDER}:{calling_ae}",
            ae_title=calling_ae,
            host=caller.host or calling_host,
            port=caller.port,
        ))
    return list(targets.values())
