"""How a radiograph becomes the network's input: the one definition that training, prediction
and CAM share, so what a model learnt from is what it is shown.

1. Load (`load_image`): any file PIL reads, as 8-bit RGB, upright (its EXIF orientation).
2. Resize to a square `size` x `size` with PIL's bilinear filter (antialiased when shrinking).
3. Scale to [0, 1] and normalise with the ImageNet mean and std (a bundle records both).

Two renderings of steps 2-3: `to_input` (numpy, HWC: prediction's fast path, `decode`, and CAM)
and `transform` (torchvision, CHW: training, where the random flips and rotations sit between
the resize and the normalisation). tests/test_model.py checks that the two give the same tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reference_model.errors import printable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Far more pixels than any radiograph (MURA's longest side is 512): refuse before decoding.
MAX_PIXELS = 8192 * 8192


class ImageError(Exception):
    """One image that cannot be read (missing, empty, truncated, not an image, too large)."""


def load_image(path: str | Path, keep_grey: bool = False):
    """A radiograph as an 8-bit RGB PIL image, upright, whatever the file holds (8- or 16-bit
    greyscale, float, RGB, RGBA, palette, ...): the one reader of training, prediction and CAM.
    With `keep_grey` a greyscale image (MURA's are) stays one 8-bit band, mode L: `to_input`
    gives the same array for it as for its RGB copy, from a third of the resizing work.
    An EXIF orientation tag is applied (a camera or an export may store the pixels turned, with
    a tag saying how to show them). Raises ImageError, with a short message, for anything that
    is not a readable image: whatever fails while one image is decoded ends that image, not the
    run."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    name = printable(str(path))
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{name} is {width}x{height} pixels, far larger than a radiograph; not decoded"
                )
            image.load()  # decode now: truncated files fail here, not later
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image, name, keep_grey)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist") from None
    except UnidentifiedImageError:
        kind = "empty" if path.stat().st_size == 0 else "not an image PIL can read"
        raise ImageError(f"{name} is {kind}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is far larger than a radiograph (decompression bomb guard)") from None
    except MemoryError:  # e.g. under an address-space limit (the bwrap sandbox's prlimit)
        raise ImageError(f"{name} cannot be decoded in the memory available") from None
    except Exception as exc:  # PIL's decoders fail in many types (OSError, SyntaxError, struct.error, ...)
        raise ImageError(f"{name} cannot be decoded ({type(exc).__name__}: {printable(str(exc))})") from None


def _to_rgb(image, name: str, keep_grey: bool = False):
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_to_8_bits(np.asarray(image, dtype=np.float32), name, image.mode == "F"))
    if keep_grey and image.mode == "L":
        return image  # loaded: its pixels outlive the file
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")  # drop the alpha channel
    return image.convert("RGB")


def _to_8_bits(array: np.ndarray, name: str, floating: bool = False) -> np.ndarray:
    """16-bit, 32-bit or float greyscale in 8 bits. Values from 0 up keep their scale (brought
    down by the maximum when it passes 255); a float image within [0, 1] is on the unit scale
    float images use, brought up to 255 (else it would come out black); signed data (any value
    below 0) is scaled by its range, the lowest value black, rather than clipped at 0, which
    would blacken half a zero-centred image. NaN or infinite pixels (no reading there) become
    black and do not stretch the range; an image with no finite pixel at all holds nothing to
    see: unreadable."""
    finite = np.isfinite(array)
    if not finite.any():
        raise ImageError(f"{name} holds no finite pixel values (all NaN or infinite)")
    values = array if finite.all() else array[finite]
    low, high = float(values.min()), float(values.max())
    with np.errstate(over="ignore"):  # an overflow past float32's range ends at 255 all the same
        if low < 0:
            array = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        elif high > 255:
            array = array * (255.0 / high)
        elif floating and high <= 1.0:
            array = array * 255.0
    return np.where(finite, array, 0.0).clip(0, 255).astype(np.uint8)


def to_input(
    image, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """An RGB (or greyscale, mode L) PIL image as the network sees it: (size, size, 3) float32,
    normalised, HWC. A grey band is resized once and repeated into the three channels: PIL
    resizes each band of an RGB image alike, so the numbers are those of its RGB copy."""
    from PIL import Image

    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def decode(
    path: str | Path, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """One view read from its file as the network sees it (prediction's fast path)."""
    return to_input(load_image(path, keep_grey=True), size, mean, std)


def transform(
    image_size: int, train: bool, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
):
    """The same steps in torchvision, on an RGB PIL image -> (3, size, size) tensor; for training
    also the paper's augmentation: random horizontal flips (lateral inversions) and rotations of
    up to 30 degrees. torchvision resizes a PIL image with PIL's own bilinear filter."""
    from torchvision import transforms as T

    steps = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)]
    if train:
        steps += [T.RandomHorizontalFlip(), T.RandomRotation(30)]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
