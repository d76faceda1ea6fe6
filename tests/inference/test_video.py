"""Video-compressed US cine (MPEG-2, H.264, HEVC) decodes to the right frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import (
    HEVCMP51,
    MPEG2MPML,
    MPEG4HP41,
    MPEG4HP41F,
    UltrasoundMultiFrameImageStorage,
)

from inference.preprocessing import PixelDataError, image_input_from_dataset

av = pytest.importorskip("av")

ROWS, COLUMNS, FRAMES = 240, 320, 12


def moving_square(n: int) -> np.ndarray:
    """RGB frames of a bright square moving right on a dark background."""
    frames = np.full((n, ROWS, COLUMNS, 3), 20, dtype=np.uint8)
    for i in range(n):
        frames[i, 80:160, 40 + 10 * i : 120 + 10 * i] = 220
    return frames


def encode(frames: np.ndarray, codec: str, container: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = COLUMNS, ROWS, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def video_dataset(bitstream: bytes, syntax: str, frames: int = FRAMES) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "US"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 33.3
    ds.PixelData = encapsulate([bitstream])
    return ds


@pytest.mark.parametrize(
    ("codec", "container", "syntax"),
    [
        ("libx264", "h264", MPEG4HP41),
        ("mpeg2video", "mpeg2video", MPEG2MPML),
        ("libx265", "hevc", HEVCMP51),
    ],
)
def test_video_cine_decodes_to_moving_frames(codec: str, container: str, syntax: str) -> None:
    source = moving_square(FRAMES)
    ds = video_dataset(encode(source, codec, container), syntax)
    image = image_input_from_dataset(ds)
    assert image.frames.shape == (FRAMES, ROWS, COLUMNS)
    for i in (0, FRAMES - 1):
        column = 40 + 10 * i + 40
        assert image.frames[i, 120, column] > 180, "the square is where it was drawn"
        assert image.frames[i, 20, 20] < 60


def test_video_with_fewer_frames_than_declared_is_refused() -> None:
    ds = video_dataset(encode(moving_square(4), "libx264", "h264"), MPEG4HP41, frames=10)
    with pytest.raises(PixelDataError, match="holds 4 frames"):
        image_input_from_dataset(ds)


def test_garbage_video_is_refused() -> None:
    ds = video_dataset(b"\x00\x00\x01garbage" * 100, MPEG4HP41)
    with pytest.raises(PixelDataError):
        image_input_from_dataset(ds)


def test_video_declaring_another_size_is_refused_before_decoding() -> None:
    ds = video_dataset(encode(moving_square(4), "libx264", "h264"), MPEG4HP41, frames=4)
    ds.Columns = COLUMNS * 4
    with pytest.raises(PixelDataError, match=f"declares {COLUMNS}x{ROWS}"):
        image_input_from_dataset(ds)


def test_fragmentable_video_is_joined_from_its_fragments() -> None:
    bitstream = encode(moving_square(FRAMES), "libx264", "h264")
    ds = video_dataset(bitstream, MPEG4HP41F)
    ds.PixelData = encapsulate([bitstream], fragments_per_frame=3)
    assert len(list(generate_fragments(ds.PixelData))) == 1 + 3  # the offset table first
    assert image_input_from_dataset(ds).frames.shape == (FRAMES, ROWS, COLUMNS)


def test_video_cine_without_number_of_frames_is_refused() -> None:
    ds = video_dataset(encode(moving_square(4), "libx264", "h264"), MPEG4HP41, frames=4)
    del ds.NumberOfFrames
    with pytest.raises(PixelDataError, match="Number of Frames"):
        image_input_from_dataset(ds)
