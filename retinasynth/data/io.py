"""Reading fundus images, vessel masks and FOV masks from any format retinal datasets ship.

Images become RGB ``uint8``; masks become ``bool``. Grey, RGBA, 16-bit and palette files are
converted rather than refused. GIF, PPM and .gz files go through Pillow, the rest through OpenCV
(faster), with Pillow as the fallback.
"""

from __future__ import annotations

import gzip
import io
import warnings
from pathlib import Path

import numpy as np

from retinasynth.errors import DataError

MASK_THRESHOLD = 127


def _decode(path: Path) -> np.ndarray:
    """Decode any supported file to a numpy array (H, W) or (H, W, C), native dtype, RGB order."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset folder.")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes and suffixes[-1] == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
            return _decode_pillow(io.BytesIO(data))
        if suffixes and suffixes[-1] in (".gif", ".ppm", ".pgm", ".pbm"):
            return _decode_pillow(path)
        if suffixes and suffixes[-1] in (".jpg", ".jpeg") and not _has_jpeg_end(path):
            # OpenCV decodes a truncated JPEG without error, filling the missing part with grey.
            raise DataError(f"{path}: truncated JPEG (no end-of-image marker); the file is corrupt "
                            "or truncated, re-download or remove it.")
        import cv2

        _silence_opencv()
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            return _decode_pillow(path)
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr[:, :, ::-1]
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, [2, 1, 0, 3]]
        return np.ascontiguousarray(arr)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        raise DataError(f"{path}: cannot be decoded as an image ({type(e).__name__}: {e}); "
                        "the file is corrupt or truncated, re-download or remove it.") from None


def _has_jpeg_end(path: Path, tail: int = 4096) -> bool:
    """Whether the file's last bytes hold the JPEG end-of-image marker (FF D9); entropy-coded data
    never contains it, and a few trailing bytes after it (padding, vendor data) are tolerated."""
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)
        f.seek(max(0, f.tell() - tail))
        return b"\xff\xd9" in f.read()


def _silence_opencv() -> None:
    """Corrupt files are reported by us, in one line, not by OpenCV's logger on stderr."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:
        pass


def _decode_pillow(src) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the decode result decides
        with Image.open(src) as im:
            im.load()
            return _pil_to_array(im)


def _pil_to_array(im) -> np.ndarray:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("L" if im.mode == "1" else "RGB")
    elif im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16)
    return np.asarray(im)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        mx = int(arr.max())
        maxv = 255 if mx <= 255 else np.iinfo(arr.dtype).max
        if arr.dtype.itemsize > 2 and mx <= 65535:
            maxv = 65535  # 16-bit data in a wider container: Pillow reads 16-bit PGM/PPM as int32 "I"
        return (arr.astype(np.float64) * (255.0 / maxv)).round().clip(0, 255).astype(np.uint8)
    a = arr.astype(np.float64)
    scale = 255.0 if a.max() <= 1.0 else 1.0
    return (a * scale).round().clip(0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read a fundus photograph as an RGB ``uint8`` array (H, W, 3)."""
    path = Path(path)
    arr = _to_uint8(_decode(path))
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 2:
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{path}: unsupported image shape {arr.shape}; expected HxW or HxWx3/4.")
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path, *, warn_non_binary: bool = True) -> np.ndarray:
    """Read a binary mask (vessels or FOV) as ``bool``; grey levels are thresholded at > 127.

    Colour masks use their maximum channel, so a white-on-black RGB or palette mask reads correctly
    and JPEG noise around edges does not matter.
    """
    path = Path(path)
    arr = _to_uint8(_decode(path))
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        arr = arr.max(axis=2)
    if warn_non_binary:
        vals = np.unique(arr)
        if not np.isin(vals, (0, 1, 255)).all():
            warn_once(f"{path.parent}: masks are not binary (values {_fmt_vals(vals)}); "
                      f"thresholding at > {MASK_THRESHOLD}.", key=f"non-binary:{path.parent}")
    if arr.max() == 1:  # 0/1 masks
        return arr.astype(bool)
    return arr > MASK_THRESHOLD


def _fmt_vals(vals: np.ndarray) -> str:
    v = [int(x) for x in vals]
    return str(v) if len(v) <= 6 else f"[{v[0]}, {v[1]}, ..., {v[-1]}] ({len(v)} levels)"


_WARNED: set[str] = set()


def warn_once(message: str, key: str | None = None) -> None:
    """Warn once per ``key`` (default: the message), e.g. once per folder of non-binary masks."""
    key = message if key is None else key
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


def derive_fov(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Estimate the circular field of view of a fundus photograph.

    Uses the red channel (the brightest inside the FOV in fundus photos), a threshold from Otsu's
    method bounded to dark levels, then keeps the largest connected component, fills holes and
    smooths the border. Robust to dark fundus and to JPEG noise in the black surround.
    """
    import cv2
    from scipy import ndimage

    red = image[:, :, 0] if image.ndim == 3 else image
    red = cv2.GaussianBlur(red, (5, 5), 0)
    if threshold is None:
        otsu, _ = cv2.threshold(red, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = float(np.clip(otsu * 0.5, 8, 40))
    fov = red > threshold
    lab, n = ndimage.label(fov)
    if n == 0:
        return np.ones(red.shape, bool)
    sizes = ndimage.sum(fov, lab, index=np.arange(1, n + 1))
    fov = lab == (1 + int(np.argmax(sizes)))
    fov = ndimage.binary_fill_holes(fov)
    k = max(3, (min(red.shape) // 100) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fov = cv2.morphologyEx(fov.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
    return fov
