"""One input image of a client call: opened at once, decoded only as the call needs it.

An encoded image (a path or bytes) is opened when the call starts, so an unreadable or
too-large file is reported before anything is sent; its pixels are decoded later, in the way
the model's contract says (a JPEG at its DCT scale, see `client.images.preprocess.decode`), or
in full for the classical fallbacks; and a REST call can send its encoded bytes as they are.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from client.errors import BAD_INPUT, ClientError
from client.images.preprocess import ImageLike, check_pixels, decode, load_rgb, resize_for_model
from common.contract import Preprocessing

# What TF's decode_image in the bytes signatures reads, and reads as Pillow does.
_SERVER_DECODES = ("JPEG", "PNG", "GIF", "BMP")
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)


class InputImage:
    """An image a client call runs on.

    Args:
        image: a path, encoded bytes, a PIL image or a NumPy array.
        index: its position in the call, for messages.

    Raises:
        ClientError: BAD_INPUT when the image cannot be opened or has more pixels than
            the contract allows.
    """

    def __init__(self, image: ImageLike, index: int = 0):
        self.image = image
        self.name = repr(image) if isinstance(image, str) and len(image) < 200 else f"'#{index}'"
        if isinstance(image, Path):
            self.name = repr(str(image))
        self._pixels: np.ndarray | None = None
        self._encoded: bytes | None = None
        self._upright = True
        if isinstance(image, (str, Path, bytes, bytearray)):
            self._encoded, self.size, self.format, self._upright = self._open(image)
        else:
            self._pixels = self._guard(load_rgb, image)
            self.size, self.format = self._pixels.shape[:2], None

    def _open(self, image) -> tuple[bytes, tuple[int, int], str | None, bool]:
        data = image if isinstance(image, (bytes, bytearray)) else self._guard(_read, image)
        with self._guard(Image.open, io.BytesIO(data)) as opened:
            self._guard(check_pixels, opened.size)
            width, height = opened.size
            turned = opened.getexif().get(_EXIF_ORIENTATION, 1)
            size = (width, height) if turned in _SWAPS_SIDES else (height, width)
            return bytes(data), size, opened.format, turned == 1

    def _guard(self, function, *args):
        try:
            return function(*args)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            raise ClientError(BAD_INPUT, f"cannot read image {self.name}: {error}") from None

    def pixels(self) -> np.ndarray:
        """The whole image as uint8 RGB `[H, W, 3]`, upright (classical methods, pictures)."""
        if self._pixels is None:
            self._pixels = self._guard(load_rgb, self._encoded)
        return self._pixels

    def model_input(self, pre: Preprocessing) -> np.ndarray:
        """The model's input, float32 `[S, S, C]` (an encoded JPEG decoded at its DCT scale)."""
        if self._encoded is not None:
            pixels, _ = self._guard(decode, self._encoded, pre)
        else:
            pixels = self._guard(load_rgb, self._pixels, pre.channels, pre.max_pixels)
        return self._guard(resize_for_model, pixels, pre)

    def encoded(self) -> bytes | None:
        """The bytes to send to a bytes signature, or None when the server would read them
        otherwise than the client (another format, or an EXIF rotation it ignores)."""
        if self._encoded is None or self.format not in _SERVER_DECODES or not self._upright:
            return None
        return self._encoded


def _read(path) -> bytes:
    return Path(path).read_bytes()
