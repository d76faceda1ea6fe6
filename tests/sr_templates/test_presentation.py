"""Presentation states: GSPS for grayscale, CSPS for colour, one box per finding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import (
    ColorSoftcopyPresentationStateStorage,
    GrayscaleSoftcopyPresentationStateStorage,
)

from inference.findings import AnatomyValues, BoundingBox, ImageResult, StudyResult
from sr_templates import ResultOptions
from sr_templates.presentation import (
    build_presentation_states,
    cardiac_caption,
    lesion_caption,
    shown_percent,
)
from sr_templates.sources import SourceSet
from tests.sr_templates.sr_factories import (
    CARDIAC_ALGORITHM,
    analysed,
    make_cardiac,
    make_lesion,
    make_us_image,
    save,
    study_of,
)


def build(sources: Sequence[Dataset], result: StudyResult) -> list[Dataset]:
    source_set = SourceSet.from_datasets(sources, result)
    return build_presentation_states(source_set, result, ResultOptions())


@pytest.mark.parametrize(
    ("photometric", "sop_class"),
    [
        ("MONOCHROME2", GrayscaleSoftcopyPresentationStateStorage),
        ("RGB", ColorSoftcopyPresentationStateStorage),
        ("PALETTE COLOR", ColorSoftcopyPresentationStateStorage),
    ],
)
def test_state_kind_follows_the_colour_model(
    photometric: str, sop_class: str, tmp_path: Path, dciodvfy: Callable
) -> None:
    source = make_us_image(photometric)
    lesion = make_lesion(source, BoundingBox(10, 20, 50, 60))
    (state,) = build([source], study_of(analysed(source, [lesion]), source=source))
    dciodvfy(state)
    state = pydicom.dcmread(save(state, tmp_path / "pr.dcm"))
    assert state.SOPClassUID == sop_class
    (annotation,) = state.GraphicAnnotationSequence
    assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    (graphic,) = annotation.GraphicObjectSequence
    assert graphic.GraphicType == "POLYLINE" and graphic.GraphicAnnotationUnits == "PIXEL"
    np.testing.assert_allclose(
        np.reshape(graphic.GraphicData, (-1, 2)), lesion.key_observation.box.polyline()
    )
    (text,) = annotation.TextObjectSequence
    assert text.UnformattedTextValue == lesion_caption(lesion)
    assert "55%" in text.UnformattedTextValue and "malignancy 80%" in text.UnformattedTextValue
    assert text.AnchorPointVisibility == "Y", "a leader line from the caption to its box"


@pytest.mark.parametrize(("probability", "shown"),
                         [(0.0026, "<1%"), (0.006, "1%"), (0.55, "55%"), (0.994, "99%"),
                          (0.995, ">99%"), (1.0, ">99%")])
def test_captions_never_show_certainty(probability: float, shown: str) -> None:
    assert shown_percent(probability) == shown


def test_breast_classes_are_named_for_the_reader() -> None:
    source = make_us_image()
    other = make_lesion(source, BoundingBox(10, 10, 40, 40), index=1)
    other.label = "other"
    other.probabilities = {"carcinoma": 0.1, "fibroadenoma": 0.05, "simple_cyst": 0.01,
                           "other": 0.84}
    other.malignancy_probability = 0.0026
    assert lesion_caption(other) == (
        "Lesion 1: Other benign-appearing lesion 84%, malignancy <1% (AI)")
    other.label = "simple_cyst"
    assert "Simple cyst 1%" in lesion_caption(other)


def test_cine_annotations_name_their_frames(dciodvfy: Callable) -> None:
    source = make_us_image("YBR_FULL_422", frames=6)
    lesions = [
        make_lesion(source, BoundingBox(10, 10, 40, 40), frames=(1, 2, 3), index=1),
        make_lesion(source, BoundingBox(60, 60, 90, 90), frames=(5,), index=2,
                    contour=np.array([[65.0, 65.0], [85.0, 66.0], [80.0, 85.0]])),
    ]
    (state,) = build([source], study_of(analysed(source, lesions), source=source))
    dciodvfy(state)
    frames = [
        int(a.ReferencedImageSequence[0].ReferencedFrameNumber)
        for a in state.GraphicAnnotationSequence
    ]
    assert frames == [2, 5]
    assert len(state.GraphicAnnotationSequence[1].GraphicObjectSequence) == 2


def test_grayscale_and_colour_images_get_separate_states(dciodvfy: Callable) -> None:
    gray, colour = make_us_image("MONOCHROME2"), make_us_image("RGB")
    result = study_of(
        analysed(gray, [make_lesion(gray, BoundingBox(1, 1, 20, 20))]),
        analysed(colour, [make_lesion(colour, BoundingBox(1, 1, 20, 20), index=2)]),
        source=gray,
    )
    states = build([gray, colour], result)
    assert [s.SOPClassUID for s in states] == [
        GrayscaleSoftcopyPresentationStateStorage,
        ColorSoftcopyPresentationStateStorage,
    ]
    assert len({s.SOPInstanceUID for s in states}) == 2
    for state in states:
        dciodvfy(state)


def test_echo_state_shows_the_ef() -> None:
    source = make_us_image(frames=6, body_part="HEART")
    finding = make_cardiac(source)
    finding.end_diastolic_contour = np.array([[50.0, 30.0], [100.0, 30.0], [75.0, 90.0]])
    image = ImageResult(source.SOPInstanceUID, AnatomyValues.HEART, CARDIAC_ALGORITHM,
                        cardiac=[finding])
    (state,) = build([source], study_of(image, source=source))
    texts = [a.TextObjectSequence[0].UnformattedTextValue for a in state.GraphicAnnotationSequence]
    assert texts == [
        f"{phase}, frame {frame}: LVEF 56% (EDV 120 ml, ESV 53 ml) (AI)"
        for phase, frame in (("End-diastole", finding.end_diastolic_frame),
                             ("End-systole", finding.end_systolic_frame))
    ]
    assert "GraphicObjectSequence" in state.GraphicAnnotationSequence[0]


def test_no_findings_give_no_state() -> None:
    source = make_us_image()
    assert build([source], study_of(analysed(source), source=source)) == []


def test_echo_caption_omits_unknown_volumes() -> None:
    source = make_us_image(frames=6, body_part="HEART")
    finding = make_cardiac(source)
    finding.end_diastolic_volume_ml = finding.end_systolic_volume_ml = float("nan")
    assert cardiac_caption(finding) == "LVEF 56% (AI)"


def test_captions_stay_inside_the_image_and_apart(dciodvfy: Callable) -> None:
    source = make_us_image("MONOCHROME2", rows=240, columns=320)
    lesions = [
        make_lesion(source, BoundingBox(290, 100, 318, 130), index=1),  # at the right edge
        make_lesion(source, BoundingBox(280, 0, 310, 20), index=2),  # at the top
        make_lesion(source, BoundingBox(286, 140, 316, 170), index=3),  # just below the first
    ]
    (state,) = build([source], study_of(analysed(source, lesions), source=source))
    dciodvfy(state)
    (annotation,) = state.GraphicAnnotationSequence
    boxes = []
    for text, lesion in zip(annotation.TextObjectSequence, lesions, strict=True):
        left, top = text.BoundingBoxTopLeftHandCorner
        right, bottom = text.BoundingBoxBottomRightHandCorner
        assert 0 <= left < right <= 320 and 0 <= top < bottom <= 240
        assert text.BoundingBoxTextHorizontalJustification == "LEFT"
        assert right - left >= min(len(text.UnformattedTextValue) * 5, 300)
        box = lesion.key_observation.box
        assert list(text.AnchorPoint) == [box.x0, box.y0]
        assert bottom <= box.y0 or top >= box.y1, "beside the lesion, not over it"
        boxes.append((left, top, right, bottom))
    assert boxes[1][1] >= 20, "no room above the top lesion: below it"
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_no_caption_is_written_over_a_lesion(dciodvfy: Callable) -> None:
    source = make_us_image("MONOCHROME2", rows=240, columns=320)
    boxes = [BoundingBox(100, 2, 140, 20), BoundingBox(100, 24, 140, 60),
             BoundingBox(60, 64, 200, 90)]
    lesions = [make_lesion(source, box, index=i) for i, box in enumerate(boxes, start=1)]
    (state,) = build([source], study_of(analysed(source, lesions), source=source))
    dciodvfy(state)
    (annotation,) = state.GraphicAnnotationSequence
    for text in annotation.TextObjectSequence:
        left, top = text.BoundingBoxTopLeftHandCorner
        right, bottom = text.BoundingBoxBottomRightHandCorner
        for box in boxes:
            assert not (left < box.x1 and box.x0 < right and top < box.y1 and box.y0 < bottom)
