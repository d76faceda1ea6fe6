"""Options of one result-building job, series numbering and UIDs."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from pydicom import Dataset

from inference.findings import AlgorithmInfo
from sr_templates import codes
from sr_templates.sources import character_set_for_highdicom

MAX_SERIES_NUMBER = 2**31 - 1
"""Largest value an IS Series Number can hold."""


def hashed_uid(*parts: object) -> str:
    """A ``2.25`` UID derived from the SHA-256 of ``parts`` (reproducible)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


class ObjectKindValues(enum.Enum):
    """Kinds of result object; the value is the series-number offset ``k``."""

    SR = 1
    SEG = 2
    PR = 3
    SC = 4

    @property
    def series_description(self) -> str:
        """Series Description written into objects of this kind."""
        return _SERIES_DESCRIPTIONS[self]


_SERIES_DESCRIPTIONS = {
    ObjectKindValues.SR: "AI measurement report",
    ObjectKindValues.SEG: "AI segmentation",
    ObjectKindValues.PR: "AI presentation state",
    ObjectKindValues.SC: "AI overlay - not for diagnosis",
}


@dataclass(frozen=True)
class ResultOptions:
    """What to build for one job and how to label it.

    Series numbering: an object of kind ``k`` (SR 1, SEG 2, PR 3, SC 4)
    written by job ``job_sequence`` goes in series number
    ``series_number_base + 10 * job_sequence + k`` and in a series whose UID
    depends on the job, so a re-run for late arrivals lands in new series.

    Parameters
    ----------
    job_sequence:
        Sequence number of the job within the study (0 for the first run).
    manufacturer:
        Manufacturer of the node (General Equipment, Contributing Equipment).
    device_name:
        Model name of the node, also the SR device observer name.
    software_version:
        Software version of the node.
    institution_name:
        Optional Institution Name written into the objects.
    include_segmentation:
        Build SEG objects for lesions (and LV cavities) with masks.
    include_presentation_state:
        Build Grayscale / Color Softcopy Presentation States.
    include_overlay_capture:
        Build secondary-capture "AI overlay" images with burned-in graphics.
    report_when_nothing_found:
        Say explicitly in the SR which analysed images showed no lesion.
    report_not_assessed:
        Say in the SR which images were not analysed and why.
    uid_seed:
        When set, every UID is derived from it and the inputs, so that the
        same job gives the same UIDs; when ``None``,
        :func:`~sr_templates.build_result_objects` draws a random seed per
        call (and :meth:`uid` called directly returns random UIDs).
    series_number_base:
        Base of the series numbers.
    """

    job_sequence: int = 0
    manufacturer: str = "US AI DICOM node project"
    device_name: str = "us-ai-dicom-node"
    software_version: str = "0.1.0"
    institution_name: str | None = None
    include_segmentation: bool = True
    include_presentation_state: bool = True
    include_overlay_capture: bool = False
    report_when_nothing_found: bool = True
    report_not_assessed: bool = True
    uid_seed: str | None = None
    series_number_base: int = 9000

    def __post_init__(self) -> None:
        for name in ("job_sequence", "series_number_base"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Option {name!r} must be an int.")
            if value < 0:
                raise ValueError(f"Option {name!r} must not be negative.")
        if self.series_number(ObjectKindValues.SC) > MAX_SERIES_NUMBER:
            raise ValueError("Series numbers would exceed the range of Series Number.")
        for name in ("manufacturer", "device_name", "software_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Option {name!r} must be a non-empty string.")

    @property
    def device_uid(self) -> str:
        """UID of the node as SR device observer; changes with its version."""
        return hashed_uid(self.manufacturer, self.device_name, self.software_version)

    def series_number(self, kind: ObjectKindValues) -> int:
        """Series number of objects of ``kind`` in this job."""
        return self.series_number_base + 10 * self.job_sequence + ObjectKindValues(kind).value

    def uid(self, *parts: object) -> str:
        """A new UID; derived from ``uid_seed`` and ``parts`` when a seed is set."""
        if self.uid_seed is None:
            return str(hd.UID())
        return hashed_uid(self.uid_seed, *parts)

    def series_uid(self, study_instance_uid: str, kind: ObjectKindValues) -> str:
        """Series Instance UID of objects of ``kind`` in this job."""
        kind = ObjectKindValues(kind)
        return self.uid(study_instance_uid, self.job_sequence, kind.name, "series")

    def object_arguments(
        self,
        kind: ObjectKindValues,
        source: Dataset,
        instance_number: int,
        algorithms: Sequence[AlgorithmInfo],
        *uid_parts: object,
    ) -> dict[str, Any]:
        """Keyword arguments every highdicom SOP class constructor gets.

        Series, SOP Instance UID (derived from ``uid_parts`` when seeded),
        equipment (the node's device UID doubles as its serial number),
        Contributing Equipment, and the character set of ``source``.
        """
        kind = ObjectKindValues(kind)
        study = source.StudyInstanceUID
        return {
            "series_instance_uid": self.series_uid(study, kind),
            "series_number": self.series_number(kind),
            "sop_instance_uid": self.uid(
                study, self.job_sequence, kind.name, "instance", *uid_parts
            ),
            "instance_number": instance_number,
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.device_name,
            "software_versions": self.software_version,
            "device_serial_number": self.device_uid,
            "institution_name": self.institution_name,
            "series_description": kind.series_description,
            "contributing_equipment": self.contributing_equipment(algorithms),
            "specific_character_set": character_set_for_highdicom(source),
        }

    def contributing_equipment(
        self, algorithms: Sequence[AlgorithmInfo]
    ) -> list[hd.ContributingEquipment]:
        """Contributing Equipment items: the node and every algorithm.

        Each algorithm item carries its Device UID, which changes whenever
        the model's weights change (IHE AIR).
        """
        node = hd.ContributingEquipment(
            manufacturer=self.manufacturer,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=self.device_name,
            software_versions=self.software_version,
            institution_name=self.institution_name,
            contribution_description="Built the AI result objects",
        )
        node.DeviceUID = self.device_uid
        items = [node]
        for algorithm in algorithms:
            item = hd.ContributingEquipment(
                manufacturer=self.manufacturer,
                purpose_of_reference=codes.PROCESSING_EQUIPMENT,
                manufacturer_model_name=algorithm.name[:64],
                software_versions=algorithm.version,
                contribution_description="AI algorithm that produced the findings",
            )
            item.DeviceUID = algorithm.device_uid
            items.append(item)
        return items
