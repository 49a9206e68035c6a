"""File-backed media values and the store that owns the output directory.

Graph state carries *references* to media (a path, a mime type, a size), never base64
blobs, so checkpoints and traces stay small. Values are frozen pydantic models: they
serialise into checkpoints and ``trace.json`` as plain JSON.

:class:`MediaStore` is the only writer of output files: names are made safe and confined
to its directory, writes are atomic (temporary file, then rename), and downloads are
streamed with a size cap and accepted only over http(s).

Input images are checked before anything trusts them: :meth:`Image.open` reads the header,
refuses images over :data:`MAX_IMAGE_PIXELS` (decompression bombs) and makes sure the file
decodes to the end (a truncated JPEG is a :class:`MediaError` at input time, not a failure
halfway through a run). Engines get the bytes they send through :func:`prepared`, which
decodes, downscales and re-encodes in a worker thread to each provider's
:class:`ImageLimits`, so two branches analysing one large image overlap instead of taking
turns on the event loop.

The package's modules: ``_checks`` (MIME types, size and pixel limits), ``_image`` (opening,
checking and preparing images), ``_probe`` (audio and video probed with PyAV, audio limits),
``_values`` (the media values and the media root) and ``_store`` (:class:`MediaStore`).
"""

from calliope_graph.media._checks import MAX_IMAGE_PIXELS, max_image_pixels, mime_of
from calliope_graph.media._checks import MAX_INPUT_BYTES as MAX_INPUT_BYTES
from calliope_graph.media._image import (
    ImageLimits,
    PreparedImage,
    prepared,
)
from calliope_graph.media._image import pil_open as pil_open
from calliope_graph.media._image import prepare_image as prepare_image
from calliope_graph.media._probe import AudioLimits, check_audio
from calliope_graph.media._store import MediaStore
from calliope_graph.media._values import Audio, Image, ImageAnalysis, Video, set_media_root

__all__ = [
    "MAX_IMAGE_PIXELS",
    "Audio",
    "AudioLimits",
    "Image",
    "ImageAnalysis",
    "ImageLimits",
    "MediaStore",
    "PreparedImage",
    "Video",
    "check_audio",
    "max_image_pixels",
    "mime_of",
    "prepared",
    "set_media_root",
]
