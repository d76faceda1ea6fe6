"""Decoding of video-compressed ultrasound cine (MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265).

Some ultrasound devices store cine loops with a video transfer syntax; pydicom
has no decoder for those, so the encapsulated bit stream is handed to FFmpeg
(through PyAV, which ships its own FFmpeg libraries).
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import Dataset
from pydicom.encaps import generate_fragments
from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    MPEG2MPHL,
    MPEG2MPHLF,
    MPEG2MPML,
    MPEG2MPMLF,
    MPEG4HP41,
    MPEG4HP41BD,
    MPEG4HP41BDF,
    MPEG4HP41F,
    MPEG4HP42STEREO,
    MPEG4HP42STEREOF,
    MPEG4HP422D,
    MPEG4HP422DF,
    MPEG4HP423D,
    MPEG4HP423DF,
    UID,
)

VIDEO_TRANSFER_SYNTAXES: frozenset[UID] = frozenset(
    {
        MPEG2MPML,
        MPEG2MPHL,
        MPEG4HP41,
        MPEG4HP41BD,
        MPEG4HP422D,
        MPEG4HP423D,
        MPEG4HP42STEREO,
        MPEG2MPMLF,
        MPEG2MPHLF,
        MPEG4HP41F,
        MPEG4HP41BDF,
        MPEG4HP422DF,
        MPEG4HP423DF,
        MPEG4HP42STEREOF,
        HEVCMP51,
        HEVCM10P51,
    }
)
"""Transfer syntaxes whose pixel data is a video bit stream (the fragmentable ones
spread it over fragments, which are joined)."""


class VideoDecodeError(ValueError):
    """The video bit stream cannot be decoded or does not match the header."""


def decode_video(ds: Dataset) -> np.ndarray:
    """Decode every frame of a video-encoded cine to RGB.

    Parameters
    ----------
    ds:
        A dataset whose Pixel Data holds an MPEG-2, H.264 or HEVC stream.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array ``(frames, rows, columns, 3)``; at most
        NumberOfFrames frames.

    Raises
    ------
    VideoDecodeError
        If PyAV is missing, the stream is unreadable, or it holds fewer frames
        than NumberOfFrames or frames of another size than Rows x Columns.
    """
    try:
        import av
    except ImportError as exc:
        raise VideoDecodeError("video cine needs PyAV (pip install av)") from exc
    fragments = generate_fragments(ds.PixelData)
    next(fragments, None)  # the Basic Offset Table item: no part of the stream
    stream = b"".join(fragments)
    rows, columns = int(ds.Rows), int(ds.Columns)
    declared = ds.get("NumberOfFrames")
    # Without Number of Frames one frame more than a still is read, to tell the two apart.
    wanted = int(declared or 1) + (declared is None)
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(stream), mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError("the bit stream holds no video")
            context = container.streams.video[0].codec_context
            if context.width and context.height and (context.height, context.width) != (
                    rows, columns):
                # Refused before decoding: a decoder allocates what the stream declares.
                raise VideoDecodeError(
                    f"the video declares {context.width}x{context.height}, "
                    f"the header says {columns}x{rows}"
                )
            for frame in container.decode(video=0):
                image = frame.to_ndarray(format="rgb24")
                if image.shape[:2] != (rows, columns):
                    raise VideoDecodeError(
                        f"video frames are {image.shape[1]}x{image.shape[0]}, "
                        f"the header says {columns}x{rows}"
                    )
                frames.append(image)
                if len(frames) == wanted:
                    break
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"cannot decode the video stream: {exc}") from exc
    if declared is None:
        if len(frames) > 1:
            raise VideoDecodeError("the video holds several frames, but Number of Frames "
                                   "(0028,0008) is missing")
        wanted = 1
    if len(frames) < wanted:
        raise VideoDecodeError(f"the video holds {len(frames)} frames, the header says {wanted}")
    return np.stack(frames)
