"""The source instances of a job: checks and look-ups shared by the builders."""

from __future__ import annotations

import copy
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import structlog
from pydicom import DataElement, Dataset
from pydicom.charset import convert_encodings, encode_string, python_encoding
from pydicom.uid import (
    UID,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)
from pydicom.valuerep import DA, TM

from inference.findings import BoundingBox, StudyResult
from inference.geometry import UltrasoundRegion, regions_from_dataset

LOGGER = structlog.get_logger(__name__)

_PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate")
"""Attributes that must agree between all sources of one object."""


def is_image(ds: Dataset) -> bool:
    """Whether ``ds`` is an image instance (has rows, columns and pixel data)."""
    return "Rows" in ds and "Columns" in ds and "PixelData" in ds


def number_of_frames(ds: Dataset) -> int:
    """Number of frames of an image (1 when NumberOfFrames is absent)."""
    return int(ds.get("NumberOfFrames", 1) or 1)


_SINGLE_FRAME_CLASSES = frozenset(
    {
        UltrasoundImageStorage,
        UID("1.2.840.10008.5.1.4.1.1.6"),  # Ultrasound Image Storage (Retired)
        SecondaryCaptureImageStorage,
    }
)
"""Image SOP classes without the Multi-frame module, even if NumberOfFrames is set."""


def is_multiframe(ds: Dataset) -> bool:
    """Whether frame numbers must be given when referencing ``ds``."""
    return "NumberOfFrames" in ds and ds.SOPClassUID not in _SINGLE_FRAME_CLASSES


@dataclass(frozen=True)
class SourceSet:
    """The image sources of one job, indexed by SOP Instance UID.

    Use :meth:`from_datasets`, which validates the inputs.
    """

    images: tuple[Dataset, ...]

    @classmethod
    def from_datasets(cls, sources: Sequence[Dataset], result: StudyResult) -> SourceSet:
        """Validate the sources against each other and against ``result``.

        Non-image instances (SR, Encapsulated PDF...) are dropped.

        Raises
        ------
        TypeError
            If a source is not a pydicom Dataset or ``result`` not a StudyResult.
        ValueError
            If there is no image, if images come from different patients or
            studies, if the study differs from ``result``, or if a result
            refers to an image that is not among the sources.
        """
        if not isinstance(result, StudyResult):
            raise TypeError("Argument 'result' must be an inference.findings.StudyResult.")
        for ds in sources:
            if not isinstance(ds, Dataset):
                raise TypeError("Every source must be a pydicom Dataset.")
        images = tuple(ds for ds in sources if is_image(ds))
        if not images:
            raise ValueError("No image among the sources.")
        _check_one_patient_and_study(images)
        if images[0].StudyInstanceUID != result.study_instance_uid:
            raise ValueError("The result belongs to another study than the sources.")
        uids = [ds.SOPInstanceUID for ds in images]
        if len(set(uids)) != len(uids):
            raise ValueError("The sources contain the same SOP Instance UID twice.")
        source_set = cls(images=images)
        for image in result.images:
            source_set.image(image.source_sop_instance_uid)
            for lesion in image.lesions:
                source_set.check_frames(
                    lesion.source_sop_instance_uid,
                    [(o.frame_number, o.box) for o in lesion.observations],
                )
            for cardiac in image.cardiac:
                source_set.check_frames(
                    cardiac.source_sop_instance_uid,
                    [(cardiac.end_diastolic_frame, None), (cardiac.end_systolic_frame, None)],
                )
        LOGGER.debug("sources_validated", images=len(images), dropped=len(sources) - len(images))
        return source_set

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self.images)

    def image(self, sop_instance_uid: str) -> Dataset:
        """The source image with this SOP Instance UID.

        Raises
        ------
        ValueError
            If no source image has that UID.
        """
        for ds in self.images:
            if ds.SOPInstanceUID == sop_instance_uid:
                return ds
        raise ValueError(f"Image {sop_instance_uid} is not among the sources.")

    def regions(self, sop_instance_uid: str) -> list[UltrasoundRegion]:
        """Ultrasound regions of a source image."""
        return regions_from_dataset(self.image(sop_instance_uid))

    def check_frames(
        self, sop_instance_uid: str, frames: Sequence[tuple[int, BoundingBox | None]]
    ) -> None:
        """Check frame numbers and boxes against the image size.

        Raises
        ------
        ValueError
            If a frame number is outside ``1..NumberOfFrames`` or a box
            leaves the image.
        """
        ds = self.image(sop_instance_uid)
        n_frames = number_of_frames(ds)
        for frame, box in frames:
            if not 1 <= frame <= n_frames:
                raise ValueError(f"Frame {frame} outside 1..{n_frames} of {sop_instance_uid}.")
            if box is not None and (
                box.x0 < 0 or box.y0 < 0 or box.x1 > ds.Columns or box.y1 > ds.Rows
            ):
                raise ValueError(f"Box {box} leaves the {ds.Columns}x{ds.Rows} image.")


def attribute_copy(ds: Dataset, drop: frozenset[str] = frozenset()) -> Dataset:
    """A deep copy of ``ds`` without pixel data and without ``drop`` keywords.

    For handing highdicom a modified view of a source without touching it.
    """
    view = Dataset()
    for element in ds:
        if element.keyword != "PixelData" and element.keyword not in drop:
            view.add(copy.deepcopy(element))
    return view


_MULTIFRAME_KEYWORDS = frozenset(
    {
        "NumberOfFrames",
        "FrameIncrementPointer",
        "FrameTime",
        "FrameTimeVector",
        "FrameDelay",
        "CineRate",
        "RecommendedDisplayFrameRate",
        "StartTrim",
        "StopTrim",
    }
)


def single_frame_view(ds: Dataset) -> Dataset:
    """A US Image Storage view of a US Multi-frame image, without pixel data.

    highdicom treats every multi-frame image as an enhanced one (functional
    groups) or, without a Frame of Reference, refuses it.  Hand it this view
    and call :func:`restore_referenced_classes` on the result.
    """
    view = attribute_copy(ds, _MULTIFRAME_KEYWORDS)
    view.SOPClassUID = UltrasoundImageStorage
    return view


_CURRENT_CLASSES: dict[str, UID] = {
    "1.2.840.10008.5.1.4.1.1.6": UltrasoundImageStorage,
    "1.2.840.10008.5.1.4.1.1.3": UltrasoundMultiFrameImageStorage,
}
"""Retired US classes (which highdicom has no IOD for) and their current successors."""

_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Type 2 attributes the result objects copy; real devices sometimes omit them."""


LOSSY_METHODS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # High-Throughput JPEG 2000
    "1.2.840.10008.1.2.4.100": "ISO_13818_2",  # MPEG2 Main Profile
    "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    "1.2.840.10008.1.2.4.102": "ISO_14496_10",  # MPEG-4 AVC/H.264
    "1.2.840.10008.1.2.4.103": "ISO_14496_10",
    "1.2.840.10008.1.2.4.104": "ISO_14496_10",
    "1.2.840.10008.1.2.4.105": "ISO_14496_10",
    "1.2.840.10008.1.2.4.106": "ISO_14496_10",
    "1.2.840.10008.1.2.4.107": "ISO_23008_2",  # HEVC/H.265
    "1.2.840.10008.1.2.4.108": "ISO_23008_2",
}
"""Transfer syntaxes that are (or may be) lossy, with their Lossy Image Compression Method
(PS3.3 C.7.6.1.1.5.1): a source in one of them that does not say it was compressed is
taken as lossy, so the objects derived from it say so."""

_DATE_TIME_KEYWORDS = ("StudyDate", "StudyTime", "PatientBirthDate")
"""Dates and times the result objects copy and highdicom parses."""


def _conformant_date_time(keyword: str, value: object) -> str:
    """The value in DA/TM form: old ACR-NEMA separators removed, else empty."""
    text = str(value or "").strip()
    if keyword.endswith("Time"):
        parse, candidate = TM, text.replace(":", "")
    else:
        parse, candidate = DA, text.replace(".", "").replace("-", "").replace("/", "")
    try:
        parse(candidate)
    except ValueError:
        return ""
    return candidate


def _bad_date_times(ds: Dataset) -> dict[str, str]:
    fixed = {}
    for keyword in _DATE_TIME_KEYWORDS:
        if keyword in ds and ds[keyword].value:
            value = _conformant_date_time(keyword, ds[keyword].value)
            if value != str(ds[keyword].value):
                fixed[keyword] = value
    return fixed


def conformant_view(ds: Dataset) -> Dataset:
    """``ds`` itself, or a view highdicom accepts when ``ds`` is not quite standard.

    A view is made for a retired US SOP class (given its current successor),
    for missing Type 2 patient/study attributes (written empty, as Type 2
    allows), for dates and times in the old ACR-NEMA form (``11:20:00``,
    ``1994.11.05``), for a missing or empty Modality (Type 1; ``US``, which
    every class the node analyses implies) and for a source in a lossy transfer
    syntax that does not declare Lossy Image Compression (then ``01``, with the
    method of its transfer syntax), for a colour source without Planar
    Configuration (then 0, interleaved, as the decoder reads it) and for a Patient
    Sex outside M, F and O (``f``, ``female``, ``W`` become F; ``U`` is empty).  The pixel data
    element is shared, not copied.  Call
    :func:`restore_referenced_classes` with the original sources on every
    object built from views.
    """
    if not isinstance(ds, Dataset) or "SOPClassUID" not in ds:
        return ds  # SourceSet.from_datasets reports it
    missing = [k for k in _TYPE2_PATIENT_STUDY if k not in ds]
    dates = _bad_date_times(ds)
    modality = str(ds.get("Modality", "") or "").strip()
    lossy_method = _undeclared_lossy_method(ds)
    planar = int(ds.get("SamplesPerPixel", 1) or 1) > 1 and ds.get("PlanarConfiguration") is None
    sex = _conformant_sex(ds)
    if (ds.SOPClassUID not in _CURRENT_CLASSES and not missing and not dates and modality
            and lossy_method is None and not planar and sex is None):
        return ds
    view = attribute_copy(ds)
    if "PixelData" in ds:
        view["PixelData"] = ds["PixelData"]
    if hasattr(ds, "file_meta"):
        view.file_meta = copy.deepcopy(ds.file_meta)
    view.set_original_encoding(*ds.original_encoding)
    view.SOPClassUID = _CURRENT_CLASSES.get(ds.SOPClassUID, ds.SOPClassUID)
    for keyword in missing:
        setattr(view, keyword, "")
    for keyword, value in dates.items():
        setattr(view, keyword, value)
    if not modality:
        view.Modality = "US"
    if planar:
        view.PlanarConfiguration = 0  # Type 1C, left out by some devices: interleaved
    if sex is not None:
        view.PatientSex = sex
    if lossy_method is not None:
        view.LossyImageCompression = "01"
        view.LossyImageCompressionMethod = lossy_method
    return view


_PATIENT_SEX = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "W": "F"}
"""Patient Sex values devices write and the enumerated value (PS3.3 C.7.1.1) each means;
``W`` is German and Dutch *weiblich*/*vrouw*."""


def _conformant_sex(ds: Dataset) -> str | None:
    """The enumerated Patient Sex for a value outside M, F and O (``""``, Type 2, when
    it names none of them, as ``U`` for unknown), or ``None`` when it is conformant."""
    value = ds.get("PatientSex")
    if value is None or str(value) in ("", "M", "F", "O"):
        return None
    return _PATIENT_SEX.get(str(value).strip().upper(), "")


def _undeclared_lossy_method(ds: Dataset) -> str | None:
    """The compression method of a source in a lossy transfer syntax that does not
    declare Lossy Image Compression (Type 1 in the US modules, left out by some
    devices), or ``None``."""
    if str(ds.get("LossyImageCompression", "") or "").strip():
        return None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return LOSSY_METHODS.get(str(syntax or ""))


def walk_items(ds: Dataset) -> Iterator[tuple[str, Dataset]]:
    """Every sequence item below ``ds`` with the keyword of its sequence."""
    for element in list(ds):
        if element.VR == "SQ":
            for item in element.value:
                yield element.keyword, item
                yield from walk_items(item)


def restore_referenced_classes(ds: Dataset, sources: Sequence[Dataset]) -> None:
    """Set every Referenced SOP Class UID of a source back to its real class."""
    classes = {source.SOPInstanceUID: source.SOPClassUID for source in sources}
    for _, item in walk_items(ds):
        uid = item.get("ReferencedSOPInstanceUID")
        if uid in classes and "ReferencedSOPClassUID" in item:
            item.ReferencedSOPClassUID = classes[uid]


def _normalised(keyword: str, value: object) -> str:
    """A patient attribute as compared between sources: stripped; a name in upper case
    and by its alphabetic components, without the empty trailing ones ('Doe^Jane^^^' is
    'DOE^JANE').  Identifiers keep their case (AB123 and ab123 are two patients)."""
    text = str(value or "").strip()
    if keyword == "PatientName":
        components = [part.strip() for part in text.upper().split("=")[0].split("^")]
        while components and not components[-1]:
            components.pop()
        text = "^".join(components)
    return text


PatientKey = tuple[str, ...]


def _patient_key(ds: Dataset) -> PatientKey:
    return tuple(_normalised(keyword, ds.get(keyword)) for keyword in _PATIENT_KEYS)


def _key_difference(a: PatientKey, b: PatientKey) -> str | None:
    for keyword, first, second in zip(_PATIENT_KEYS, a, b, strict=True):
        if first and second and first != second:
            return keyword
    return None


def patient_difference(a: Dataset, b: Dataset) -> str | None:
    """The first patient attribute on which two sources disagree, or ``None``.

    Values are compared as :func:`_normalised` makes them, and a value one source
    leaves empty or out (a device that does not send the issuer or the birth date)
    agrees with any.
    """
    return _key_difference(_patient_key(a), _patient_key(b))


def one_patient(images: Sequence[Dataset]) -> tuple[list[int], dict[int, str]]:
    """Split a study's images into those of one patient and the others.

    The patient is the identity most images agree with, the most complete such
    (the one whose attributes the result objects then carry: its image comes first
    in the returned indices); images are kept while they agree with every identity
    kept so far.  Returns the kept images' indices (the reference first, the others
    in order), and for each other image the attribute it differs on (see
    :func:`patient_difference`).  Images are compared by their distinct identities,
    so a large study of one patient costs one comparison per image.
    """
    keys = [_patient_key(ds) for ds in images]
    distinct = list(dict.fromkeys(keys))
    if not distinct:
        return [], {}
    counts = Counter(keys)
    agreeing = {key: sum(counts[other] for other in distinct
                         if _key_difference(key, other) is None) for key in distinct}
    reference = max(distinct, key=lambda key: (agreeing[key], sum(map(bool, key))))
    accepted = [reference]
    verdict: dict[PatientKey, str | None] = {reference: None}
    for key in distinct:
        if key in verdict:
            continue
        difference = next((d for d in (_key_difference(k, key) for k in accepted) if d), None)
        verdict[key] = difference
        if difference is None:
            accepted.append(key)
    first = keys.index(reference)
    kept = [first] + [i for i, key in enumerate(keys) if i != first and verdict[key] is None]
    others = {i: str(verdict[key]) for i, key in enumerate(keys) if verdict[key] is not None}
    return kept, others


def _check_one_patient_and_study(images: Sequence[Dataset]) -> None:
    first = images[0]
    for ds in images[1:]:
        if UID(ds.get("StudyInstanceUID", "")) != UID(first.get("StudyInstanceUID", "")):
            raise ValueError("The sources come from different studies.")
    _kept, others = one_patient(images)
    if others:
        keyword = next(iter(others.values()))
        raise ValueError(f"The sources come from different patients ({keyword} differs).")


UTF8 = "ISO_IR 192"
"""Specific Character Set of an object whose text the source's repertoire cannot hold."""

_DEFAULT_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
"""Terms devices write for the default repertoire (only an absent attribute or an empty
first value of a code-extension set is standard, PS3.3 C.12.1.1.2)."""

_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
"""Value representations whose text is encoded with the Specific Character Set."""


def source_character_set(ds: Dataset) -> str | list[str] | None:
    """The Specific Character Set of ``ds`` as a standard value for the result objects.

    Duplicate terms are dropped; the default repertoire spelt ``ISO_IR 6`` or ``ISO 2022
    IR 6`` is no value, or the empty first value of a code-extension set; a single
    ``ISO 2022 IR n`` term of a single-byte set is that set without code extensions
    (``ISO_IR n``); a term pydicom does not know gives ``None``.
    """
    value = ds.get("SpecificCharacterSet")
    raw = [value] if isinstance(value, str) else list(value or [])
    terms = list(dict.fromkeys(str(term).strip().upper() for term in raw))
    if any(term not in _DEFAULT_TERMS and term not in python_encoding for term in terms):
        return None
    if len(terms) <= 1:
        term = terms[0] if terms else ""
        if term in _DEFAULT_TERMS:
            return None
        if term.startswith("ISO 2022 IR "):
            single = term.replace("ISO 2022 IR ", "ISO_IR ")
            return single if single in python_encoding else ["", term]
        return term
    return ["" if term in _DEFAULT_TERMS else term for term in terms]


def character_set_for_highdicom(ds: Dataset) -> str | list[str] | None:
    """:func:`source_character_set` of ``ds`` in a form highdicom accepts.

    highdicom rejects the empty first value of a code-extension set such as
    ``\\ISO 2022 IR 87``; ``ISO 2022 IR 6`` names the same default repertoire.
    Call :func:`restore_character_set` afterwards to write the standard value.
    """
    value = source_character_set(ds)
    if value is None or isinstance(value, str):
        return value
    return [item or "ISO 2022 IR 6" for item in value]


def restore_character_set(target: Dataset, source: Dataset) -> None:
    """Give ``target`` the Specific Character Set of ``source``
    (:func:`source_character_set`), or UTF-8 when a text of ``target`` does not fit
    it: text the node writes (an institution name, a note) may hold characters the
    source's repertoire lacks."""
    value = source_character_set(source)
    if not _encodable(target, value):
        LOGGER.info("result_character_set_utf8", source=str(source.get(
            "SpecificCharacterSet", "")))
        value = UTF8
    if value is None:
        if "SpecificCharacterSet" in target:
            del target.SpecificCharacterSet
    else:
        target.SpecificCharacterSet = value


def _encodable(ds: Dataset, value: str | list[str] | None) -> bool:
    """Whether every text of ``ds`` (and its sequences) encodes in the character set
    ``value``."""
    terms = [value] if isinstance(value, str) else value or [""]
    # The default repertoire is ASCII, though pydicom reads it as Latin-1.
    encodings = ["ascii" if term in _DEFAULT_TERMS else convert_encodings([term])[0]
                 for term in terms]
    texts: list[str] = []

    def collect(_ds: Dataset, elem: DataElement) -> None:
        if elem.VR in _TEXT_VRS and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            texts.extend(str(item) for item in values)

    ds.walk(collect)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            for text in texts:
                if not text.isascii():
                    encode_string(text, encodings)
        except (UnicodeError, UserWarning, LookupError):
            return False
    return True


UNPAIRED_BODY_PARTS = frozenset({
    "ABDOMEN", "ABDOMENPELVIS", "AORTA", "BACK", "BLADDER", "BRAIN", "CEREBELLUM", "CSPINE",
    "CTSPINE", "CERVIX", "CHEST", "CHESTABDOMEN", "CHESTABDPELVIS", "CIRCLEOFWILLIS", "COCCYX",
    "COLON", "CORONARYARTERY", "DUODENUM", "WHOLEBODY", "ESOPHAGUS", "FACE", "GALLBLADDER",
    "HEAD", "HEADNECK", "HEART", "ILEUM", "ILIUM", "JAW", "JEJUNUM", "LARYNX", "LIVER", "LSPINE",
    "LSSPINE", "MAXILLA", "MEDIASTINUM", "MOUTH", "NECK", "NECKCHEST", "NECKCHESTABDOMEN",
    "NECKCHESTABDPELV", "NOSE", "PANCREAS", "PELVIS", "PENIS", "PHARYNX", "PROSTATE", "RECTUM",
    "SSPINE", "SCALP", "SKULL", "SPINE", "SPLEEN", "STERNUM", "STOMACH", "TSPINE", "TLSPINE",
    "THYMUS", "THYROID", "TONGUE", "TRACHEA", "URETER", "URETHRA", "UTERUS", "VAGINA", "VULVA",
})
"""Body Part Examined defined terms of unpaired structures (PS3.16 Annex L), on which a
Laterality may not be present: those dciodvfy refuses it on (every term of Annex L tried,
2026-11-28)."""

_SIDES = ("R", "L")
"""The values of the series Laterality (0020,0060)."""
_IMAGE_SIDES = (*_SIDES, "U", "B")
"""The values of Image Laterality (0020,0062): also unpaired and both."""


def _code_string(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword) or "").strip().upper()


def source_side(source: Dataset) -> str | None:
    """R or L: the side ``source`` shows, from its Laterality, else its Image Laterality.

    Image Laterality U (unpaired) and B (both) name no single side, and the
    series Laterality has no such values, so they give ``None``.
    """
    for keyword in ("Laterality", "ImageLaterality"):
        value = _code_string(source, keyword)
        if value in _SIDES:
            return value
    return None


_CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")
"""A valid CS value (PS3.5 6.2)."""


def copy_body_part(target: Dataset, source: Dataset) -> None:
    """Copy a non-empty Body Part Examined (General Series, Type 3) from ``source``, in
    upper case as its VR (CS) wants it ('Abdomen' -> 'ABDOMEN'); a value that is not a
    code string even then is left out rather than copied invalid."""
    value = _code_string(source, "BodyPartExamined")
    if _CODE_STRING.match(value):
        target.BodyPartExamined = value


def copy_series_anatomy(target: Dataset, source: Dataset, image_laterality: bool = False) -> None:
    """Copy Body Part Examined and Laterality (General Series) from ``source``.

    For images and presentation states; a SEG takes :func:`copy_body_part`
    only.  Laterality (Type 2C) is due for a paired body part unless Image
    Laterality is sent, and may not be present for an unpaired one
    (:data:`UNPAIRED_BODY_PARTS`): there it is left out.  Anywhere else (a paired
    part, a term outside the standard's, no body part at all) it is the side
    from :func:`source_side`, or empty when the side is unknown.  With
    ``image_laterality`` (an image) the source's Image Laterality is copied
    instead when it has one, and Laterality then left out.
    """
    copy_body_part(target, source)
    if _code_string(target, "BodyPartExamined") in UNPAIRED_BODY_PARTS:
        return
    own = _code_string(source, "ImageLaterality")
    if image_laterality and own in _IMAGE_SIDES:
        target.ImageLaterality = own
        return
    target.Laterality = source_side(source) or ""
