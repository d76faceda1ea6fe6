"""SEG: masks on the right frames, tracking UIDs, derivation notes, validity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import UltrasoundMultiFrameImageStorage

from inference.findings import AnatomyValues, BoundingBox, ImageResult, StudyResult
from sr_templates import ResultOptions
from sr_templates.seg import (
    MASK_FROM_BOX,
    MASK_FROM_CONTOUR,
    MASK_FROM_ENGINE,
    build_segmentations,
    single_frame_view,
)
from sr_templates.shapes import rasterize_box
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

CONTOUR = np.array([[20.0, 20.0], [60.0, 25.0], [55.0, 60.0], [25.0, 55.0]])


def build(sources: Sequence[Dataset], result: StudyResult) -> list[hd.seg.Segmentation]:
    return build_segmentations(SourceSet.from_datasets(sources, result), result, ResultOptions())


def read_back(seg: Dataset, tmp_path: Path) -> hd.seg.Segmentation:
    return hd.seg.segread(save(seg, tmp_path / f"{seg.SOPInstanceUID}.dcm"))


def pixels_on(seg: hd.seg.Segmentation, source: Dataset, frame: int | None) -> np.ndarray:
    return seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID,
        source_frame_numbers=[frame] if frame is not None else None,
        assert_missing_frames_are_empty=False,
    )


def test_single_frame_masks_round_trip(tmp_path: Path, dciodvfy: Callable) -> None:
    source = make_us_image("MONOCHROME2")
    engine_mask = np.zeros((source.Rows, source.Columns), dtype=bool)
    engine_mask[5:15, 100:140] = True
    lesions = [
        make_lesion(source, BoundingBox(100, 0, 140, 20), index=1, mask=engine_mask),
        make_lesion(source, BoundingBox(15, 15, 65, 65), index=2, contour=CONTOUR),
        make_lesion(source, BoundingBox(0, 80, 40, 120), index=3),
    ]
    (seg,) = build([source], study_of(analysed(source, lesions), source=source))
    dciodvfy(seg)
    seg = read_back(seg, tmp_path)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source.SOPInstanceUID], assert_missing_frames_are_empty=False
    )[0]
    assert np.array_equal(pixels[..., 0], engine_mask)
    assert pixels[..., 1].sum() == 1225
    assert np.array_equal(pixels[..., 2], rasterize_box(BoundingBox(0, 80, 40, 120), 120, 160))
    descriptions = [s.SegmentDescription for s in seg.SegmentSequence]
    assert descriptions == [MASK_FROM_ENGINE, MASK_FROM_CONTOUR, MASK_FROM_BOX]
    tracking_uids = [s.TrackingUID for s in seg.SegmentSequence]
    assert tracking_uids == [lesion.tracking_uid for lesion in lesions]
    for segment in seg.SegmentSequence:
        (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
        assert algorithm.AlgorithmName == "us-liver-lesion"
        assert segment.SegmentAlgorithmType == "AUTOMATIC"


def test_multiframe_source_gets_one_seg_per_annotated_frame(
    tmp_path: Path, dciodvfy: Callable
) -> None:
    source = make_us_image("YBR_FULL_422", frames=6)
    first = make_lesion(source, BoundingBox(10, 10, 40, 40), frames=(2, 3, 4), index=1)
    second = make_lesion(source, BoundingBox(60, 60, 90, 100), frames=(6,), index=2)
    segs = build([source], study_of(analysed(source, [first, second]), source=source))
    assert len(segs) == 2
    for seg, lesion in zip(segs, [first, second], strict=True):
        dciodvfy(seg)
        frame = lesion.key_observation.frame_number
        seg = read_back(seg, tmp_path)
        derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
        reference = derivation.SourceImageSequence[0]
        assert reference.ReferencedSOPClassUID == UltrasoundMultiFrameImageStorage
        assert int(reference.ReferencedFrameNumber) == frame
        pixels = pixels_on(seg, source, frame)
        expected = rasterize_box(lesion.key_observation.box, source.Rows, source.Columns)
        assert np.array_equal(pixels[0, ..., 0], expected)
        assert seg.SegmentSequence[0].TrackingUID == lesion.tracking_uid
    assert "FrameOfReferenceUID" not in segs[0]
    assert source.SOPClassUID == UltrasoundMultiFrameImageStorage
    assert "PixelData" in source


def test_single_frame_view_leaves_the_source_untouched() -> None:
    source = make_us_image(frames=3)
    view = single_frame_view(source)
    assert "NumberOfFrames" not in view and "PixelData" not in view
    assert source.NumberOfFrames == 3 and "PixelData" in source
    assert view.SOPInstanceUID == source.SOPInstanceUID


def test_cardiac_masks_on_end_diastole_and_end_systole(
    tmp_path: Path, dcmtk_reads: Callable[[Dataset], None]
) -> None:
    source = make_us_image(frames=6, body_part="HEART")
    finding = make_cardiac(source)
    image = ImageResult(source.SOPInstanceUID, AnatomyValues.HEART, CARDIAC_ALGORITHM,
                        cardiac=[finding])
    segs = build([source], study_of(image, source=source))
    assert len(segs) == 2
    for seg, frame, mask in zip(
        segs, (2, 4), (finding.end_diastolic_mask, finding.end_systolic_mask), strict=True
    ):
        dcmtk_reads(seg)
        seg = read_back(seg, tmp_path)
        assert np.array_equal(pixels_on(seg, source, frame)[0, ..., 0], mask)
        assert seg.SegmentSequence[0].TrackingUID == finding.tracking_uid


def test_no_findings_give_no_seg() -> None:
    source = make_us_image()
    assert build([source], study_of(analysed(source), source=source)) == []


def test_mask_of_the_wrong_shape_raises_value_error() -> None:
    source = make_us_image()
    lesion = make_lesion(source, BoundingBox(1, 1, 9, 9), mask=np.ones((10, 10), dtype=bool))
    with pytest.raises(ValueError, match="mask has shape"):
        build([source], study_of(analysed(source, [lesion]), source=source))


def test_japanese_character_set_is_kept() -> None:
    source = make_us_image(japanese=True)
    lesion = make_lesion(source, BoundingBox(1, 1, 9, 9))
    (seg,) = build([source], study_of(analysed(source, [lesion]), source=source))
    assert list(seg.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert seg.PatientName == source.PatientName


def test_breast_segment_has_breast_anatomy() -> None:
    source = make_us_image(body_part="BREAST")
    lesion = make_lesion(source, BoundingBox(1, 1, 9, 9), anatomy=AnatomyValues.BREAST)
    (seg,) = build([source], study_of(analysed(source, [lesion], AnatomyValues.BREAST),
                                      source=source))
    region = seg.SegmentSequence[0].AnatomicRegionSequence[0]
    assert region.CodeValue == "76752008"
    assert seg.BodyPartExamined == "BREAST"
