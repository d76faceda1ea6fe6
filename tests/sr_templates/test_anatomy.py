"""Body part, laterality and lossy compression carried from the source to every object."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom import Dataset

from inference.findings import AnatomyValues, BoundingBox
from sr_templates import ResultOptions, build_result_objects
from sr_templates.sources import copy_series_anatomy, source_side, walk_items
from tests.sr_templates.sr_factories import analysed, make_lesion, make_us_image, study_of

EVERYTHING = ResultOptions(include_overlay_capture=True)


def _breast_source(**laterality: str) -> Dataset:
    source = make_us_image("MONOCHROME2", body_part="BREAST")
    for keyword, value in laterality.items():
        setattr(source, keyword, value)
    return source


def _objects(source: Dataset) -> dict[str, Dataset]:
    lesion = make_lesion(source, BoundingBox(20, 20, 60, 60), anatomy=AnatomyValues.BREAST)
    result = study_of(analysed(source, [lesion], anatomy=AnatomyValues.BREAST), source=source)
    return {o.Modality: o for o in build_result_objects([source], result, EVERYTHING)}


@pytest.mark.parametrize(
    ("laterality", "state_side", "overlay_side", "overlay_image_side"),
    [
        ({"ImageLaterality": "R"}, "R", None, "R"),
        ({"Laterality": "L"}, "L", "L", None),
        ({"ImageLaterality": "B"}, "", None, "B"),
        ({}, "", "", None),
    ],
    ids=["image-laterality", "series-laterality", "both-breasts", "side-unknown"],
)
def test_breast_side_reaches_the_state_and_the_overlay_but_not_the_seg(
    laterality: dict[str, str],
    state_side: str,
    overlay_side: str | None,
    overlay_image_side: str | None,
    dciodvfy: Callable,
) -> None:
    objects = _objects(_breast_source(**laterality))
    for obj in objects.values():
        dciodvfy(obj)
    assert all(objects[m].BodyPartExamined == "BREAST" for m in ("SEG", "PR", "OT"))
    assert objects["PR"].Laterality == state_side
    assert objects["OT"].get("Laterality") == overlay_side
    assert objects["OT"].get("ImageLaterality") == overlay_image_side
    assert "Laterality" not in objects["SEG"]


def test_an_unpaired_body_part_gets_no_laterality_whatever_the_source_says(
    dciodvfy: Callable,
) -> None:
    source = make_us_image("MONOCHROME2", body_part="ABDOMEN")
    source.Laterality = "R"
    source.ImageLaterality = "R"
    for obj in _objects(source).values():
        dciodvfy(obj)
        assert "Laterality" not in obj


def test_overlay_of_a_jpeg_lossy_source_says_it_is_lossy(dciodvfy: Callable) -> None:
    source = make_us_image("YBR_FULL_422", frames=2)
    objects = _objects(source)
    for obj in objects.values():
        dciodvfy(obj)
    overlay = objects["OT"]
    assert overlay.LossyImageCompression == "01"
    assert overlay.LossyImageCompressionRatio == source.LossyImageCompressionRatio
    assert overlay.LossyImageCompressionMethod == source.LossyImageCompressionMethod


def test_overlay_of_an_uncompressed_source_claims_no_compression() -> None:
    overlay = _objects(make_us_image())["OT"]
    assert "LossyImageCompression" not in overlay
    assert "LossyImageCompressionRatio" not in overlay


@pytest.mark.parametrize(
    ("laterality", "image_laterality", "side"),
    [("L", "R", "L"), ("", "R", "R"), (None, "L", "L"), (None, "B", None), ("U", "U", None)],
)
def test_source_side_prefers_laterality_and_ignores_both_and_unpaired(
    laterality: str | None, image_laterality: str, side: str | None
) -> None:
    source = Dataset()
    source.ImageLaterality = image_laterality
    if laterality is not None:
        source.Laterality = laterality
    assert source_side(source) == side


def test_laterality_without_body_part_is_empty_unless_the_side_is_known() -> None:
    unknown, known = Dataset(), Dataset()
    copy_series_anatomy(unknown, make_us_image(body_part=None))
    sided = make_us_image(body_part=None)
    sided.Laterality = "R"
    copy_series_anatomy(known, sided)
    assert unknown.Laterality == "" and "BodyPartExamined" not in unknown
    assert known.Laterality == "R"


def test_unpaired_body_part_without_side_gets_no_laterality() -> None:
    target = Dataset()
    copy_series_anatomy(target, make_us_image(body_part="ABDOMEN"))
    assert target.BodyPartExamined == "ABDOMEN"
    assert "Laterality" not in target


def _finding_sites(report: Dataset) -> list[tuple[str, str | None]]:
    """(site, laterality) of every Finding Site in the report."""
    sites = []
    for _, item in walk_items(report):
        name = item.get("ConceptNameCodeSequence")
        if name and name[0].CodeValue == "363698007" and "ConceptCodeSequence" in item:
            sides = [m.ConceptCodeSequence[0].CodeMeaning for m in item.get("ContentSequence", [])
                     if m.ConceptNameCodeSequence[0].CodeValue == "272741003"]
            sites.append((item.ConceptCodeSequence[0].CodeMeaning, sides[0] if sides else None))
    return sites


def test_a_bilateral_breast_study_says_which_breast_each_lesion_is_in(
    dciodvfy: Callable,
) -> None:
    left = _breast_source(Laterality="L")
    right = _breast_source(ImageLaterality="R")
    lesions = [
        make_lesion(source, BoundingBox(20, 20, 60, 60), anatomy=AnatomyValues.BREAST,
                    index=index)
        for index, source in enumerate((left, right), start=1)
    ]
    result = study_of(analysed(left, [lesions[0]], anatomy=AnatomyValues.BREAST),
                      analysed(right, [lesions[1]], anatomy=AnatomyValues.BREAST), source=left)
    objects = build_result_objects([left, right], result, EVERYTHING)
    for obj in objects:
        dciodvfy(obj)
    (report,) = [o for o in objects if o.Modality == "SR"]
    assert sorted(set(_finding_sites(report))) == [("Breast", "Left"), ("Breast", "Right")]
    states = [o for o in objects if o.Modality == "PR"]
    sides = {}
    for state in states:
        (reference,) = state.ReferencedSeriesSequence[0].ReferencedImageSequence
        sides[reference.ReferencedSOPInstanceUID] = state.Laterality
    assert sides == {left.SOPInstanceUID: "L", right.SOPInstanceUID: "R"}


def test_a_clean_breast_image_says_which_breast_had_nothing(dciodvfy: Callable) -> None:
    right, left, other_left = (_breast_source(Laterality="R"), _breast_source(Laterality="L"),
                               _breast_source(ImageLaterality="L"))
    lesion = make_lesion(right, BoundingBox(20, 20, 60, 60), anatomy=AnatomyValues.BREAST)
    result = study_of(analysed(right, [lesion], anatomy=AnatomyValues.BREAST),
                      analysed(left, anatomy=AnatomyValues.BREAST),
                      analysed(other_left, anatomy=AnatomyValues.BREAST), source=right)
    (report,) = build_result_objects([right, left, other_left], result,
                                     ResultOptions(include_segmentation=False,
                                                   include_presentation_state=False))
    dciodvfy(report)
    assert sorted(_finding_sites(report)) == [("Breast", "Left"), ("Breast", "Right")]
    right_negative = _breast_source(Laterality="R")
    result = study_of(analysed(left, anatomy=AnatomyValues.BREAST),
                      analysed(right_negative, anatomy=AnatomyValues.BREAST), source=left)
    (report,) = build_result_objects([left, right_negative], result,
                                     ResultOptions(include_segmentation=False,
                                                   include_presentation_state=False))
    assert sorted(_finding_sites(report)) == [("Breast", "Left"), ("Breast", "Right")]


def test_a_jpeg_source_that_does_not_say_it_is_lossy_gives_lossy_derived_objects(
    dciodvfy: Callable,
) -> None:
    source = make_us_image("YBR_FULL_422", frames=2)
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio",
                    "LossyImageCompressionMethod"):
        delattr(source, keyword)
    objects = _objects(source)
    for modality in ("SEG", "OT"):
        dciodvfy(objects[modality])
        assert objects[modality].LossyImageCompression == "01"
        method = objects[modality].LossyImageCompressionMethod
        assert "ISO_10918_1" in (method if isinstance(method, str) else list(method))


def test_non_square_pixels_keep_their_ratio_and_labels_name_the_class(
    dciodvfy: Callable,
) -> None:
    source = _breast_source()
    source.PixelAspectRatio = [12, 10]
    objects = _objects(source)
    for obj in objects.values():
        dciodvfy(obj)
    area = objects["PR"].DisplayedAreaSelectionSequence[0]
    assert list(area.PresentationPixelAspectRatio) == [12, 10]
    assert list(objects["OT"].PixelAspectRatio) == [12, 10]
    assert objects["OT"].ConversionType == "WSD"  # drawn by software, not captured
    label = objects["SEG"].SegmentSequence[0].SegmentLabel
    assert label.endswith("(Carcinoma)"), label


def test_a_monochrome1_image_keeps_its_polarity_under_the_state() -> None:
    source = _breast_source()
    source.PhotometricInterpretation = "MONOCHROME1"
    assert _objects(source)["PR"].PresentationLUTShape == "INVERSE"


@pytest.mark.parametrize(("laterality", "modifier"), [({"Laterality": "L"}, "Left"),
                                                       ({"ImageLaterality": "R"}, "Right"),
                                                       ({}, None)])
def test_a_breast_segment_names_its_side(laterality: dict[str, str], modifier: str | None,
                                         dciodvfy: Callable) -> None:
    seg = _objects(_breast_source(**laterality))["SEG"]
    dciodvfy(seg)
    region = seg.SegmentSequence[0].AnatomicRegionSequence[0]
    assert region.CodeMeaning == "Breast"
    modifiers = [m.CodeMeaning for m in region.get("AnatomicRegionModifierSequence", [])]
    assert modifiers == ([modifier] if modifier else [])
