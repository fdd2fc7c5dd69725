"""Images as PNGs on the server: window presets, thumbnails, slices with RT contours drawn.

Pixels come from pydicom (with the modality LUT: RescaleSlope/Intercept), so any transfer
syntax pydicom can decode here is shown; one it cannot decode raises ``NotRenderable`` with the
reason, for the page to say. Rendered images are kept in a bounded in-memory cache.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from uploader.web.contours import Plane, Roi, on_plane, plane_of
from uploader.web.dose import DoseGrid, isodose_edges, sample

#: name -> (label, window centre, window width); "auto" stretches the 1st-99th percentile
PRESETS: dict[str, tuple[str, float, float]] = {
    "auto": ("Auto", 0.0, 0.0),
    "soft": ("CT soft tissue", 40.0, 400.0),
    "lung": ("CT lung", -600.0, 1500.0),
    "bone": ("CT bone", 400.0, 1800.0),
}
VIEW_SIZE = 512  # slices are drawn at least this wide, so thin contours stay visible
THUMB_SIZE = 96
_GREYS = 224  # palette entries for grey levels; the rest are for ROI colours
_TO_INDEX = (np.arange(256) * (_GREYS - 1) // 255).astype(np.uint8)
_LUTS: dict[tuple[Any, ...], npt.NDArray[np.uint8]] = {}  # lookup tables by pixel encoding
_GREY_PALETTE = [round(i * 255 / (_GREYS - 1)) for i in range(_GREYS) for _rgb in range(3)]


class NotRenderable(Exception):  # noqa: N818 - a value the page shows
    """An image that cannot be shown here, with the reason."""


@dataclass(frozen=True)
class Slice:
    """One image to draw: its dataset (with pixels), its plane, its thickness for matching."""

    ds: Any
    plane: Plane | None
    spacing: float  # between neighbouring slices (mm): contours within half of it belong here


def default_preset(ds: Any) -> str:
    """CT starts on soft tissue; everything else on auto."""
    return "soft" if str(ds.get("Modality", "")) == "CT" else "auto"


def _decoded(ds: Any) -> Any:
    """The first frame's stored values, or NotRenderable naming the transfer syntax."""
    if "PixelData" not in ds:
        raise NotRenderable("this instance has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises several kinds for missing decoders
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax or "unknown"))
        raise NotRenderable(f"pixel data in {name} cannot be decoded here ({exc})") from exc
    return arr[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr


def pixels(ds: Any) -> npt.NDArray[np.float32]:
    """The first frame's values after the modality LUT (float), or NotRenderable."""
    from pydicom.pixels.processing import apply_modality_lut

    arr = _decoded(ds)
    if int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        arr = apply_modality_lut(arr, ds)
    return np.asarray(arr, dtype=np.float32)


def grey(ds: Any, preset: str, palette: bool = False) -> npt.NDArray[np.uint8]:
    """Display grey levels (0-255) of the first frame, or with ``palette`` the indices of the
    slice palette (0 to _GREYS - 1). Integer greyscale pixels of 8 or 16 bits go through one
    lookup table over every possible stored value (modality LUT, then window), kept between
    calls: a single gather over the pixels, no float arithmetic per pixel."""
    arr = _decoded(ds)
    if arr.ndim != 2 or arr.dtype.kind not in "iu" or arr.itemsize > 2:
        levels = window(pixels(ds), preset, ds)
        return _TO_INDEX[levels] if palette else levels
    unsigned = arr.view(np.uint16 if arr.itemsize == 2 else np.uint8)
    if PRESETS.get(preset, PRESETS["auto"])[2] <= 0:  # auto: percentiles of a sample
        from pydicom.pixels.processing import apply_modality_lut

        sample = np.asarray(apply_modality_lut(arr[::4, ::4], ds), dtype=np.float32)
        low, high = (float(v) for v in np.percentile(sample, (1, 99)))
        centre, width = (low + high) / 2, max(high - low, 1.0)
    else:
        _label, centre, width = PRESETS[preset]
    key = (
        arr.dtype.str,
        str(ds.get("RescaleSlope", 1)),
        str(ds.get("RescaleIntercept", 0)),
        str(ds.get("PhotometricInterpretation", "")),
        "ModalityLUTSequence" in ds,
        round(centre, 3),
        round(width, 3),
        palette,
    )
    lut = _LUTS.get(key)
    if lut is None:
        lut = _lut(ds, arr.dtype, centre, width, palette)
        if not key[4]:  # a modality LUT sequence is the file's own: not shared
            if len(_LUTS) > 64:
                _LUTS.clear()
            _LUTS[key] = lut
    out: npt.NDArray[np.uint8] = np.take(lut, unsigned)  # take: twice as fast as lut[unsigned]
    return out


def _lut(
    ds: Any, dtype: np.dtype[Any], centre: float, width: float, palette: bool
) -> npt.NDArray[np.uint8]:
    """Grey level (or palette index) for every stored value, indexed by its unsigned bits."""
    from pydicom.pixels.processing import apply_modality_lut

    unsigned = np.uint16 if dtype.itemsize == 2 else np.uint8
    stored = np.arange(1 << (8 * dtype.itemsize), dtype=np.int64).astype(unsigned).view(dtype)
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    low = centre - width / 2
    levels = np.clip((values - low) * (255.0 / width), 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        levels = 255 - levels
    lut: npt.NDArray[np.uint8] = _TO_INDEX[levels] if palette else levels
    return lut


def window(values: npt.NDArray[np.float32], preset: str, ds: Any) -> npt.NDArray[np.uint8]:
    """Grey levels 0-255 for a preset (MONOCHROME1 is inverted)."""
    if values.ndim == 3:  # colour: shown as it is
        colour: npt.NDArray[np.uint8] = np.clip(values, 0, 255).astype(np.uint8)
        return colour
    _label, centre, width = PRESETS.get(preset, PRESETS["auto"])
    if width <= 0:
        low, high = (float(v) for v in np.percentile(values, (1, 99)))
        if high <= low:
            low, high = float(values.min()), float(values.max()) + 1.0
    else:
        low, high = centre - width / 2, centre + width / 2
    out: npt.NDArray[np.uint8] = np.clip((values - low) * (255.0 / (high - low)), 0, 255).astype(
        np.uint8
    )
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        np.subtract(255, out, out=out)
    return out


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # speed over size: this is loopback/LAN
    return buf.getvalue()


def thumbnail(ds: Any, preset: str | None = None) -> bytes:
    """A small PNG of an image (its first frame)."""
    image = Image.fromarray(grey(ds, preset or default_preset(ds)))
    image.thumbnail((THUMB_SIZE, THUMB_SIZE))
    return _png(image)


def render_slice(
    item: Slice, preset: str | None, rois: list[Roi], dose: DoseGrid | None = None
) -> bytes:
    """A PNG of one slice, with every ROI contour that lies on it drawn in the ROI's colour,
    and the isodose lines of ``dose`` where its grid covers the slice.

    Greyscale slices are drawn as a palette image (224 grey levels, then the ROIs' colours):
    a third of the bytes of RGB to compress, and colours stay exact for a test to find.
    """
    ds = item.ds
    wanted = preset or default_preset(ds)
    levels = grey(ds, wanted, palette=True)
    rows, cols = levels.shape[:2]
    scale = max(1, -(-VIEW_SIZE // max(cols, 1)))  # integer zoom: pixels stay square and sharp
    drawn = on_plane(rois, item.plane, item.spacing / 2) if item.plane is not None else []
    edges = _isodoses(dose, item.plane, rows, cols)
    colours = sorted({roi.color for roi, _c in drawn} | {c for c, _e in edges})
    if levels.ndim == 2 and len(colours) <= 256 - _GREYS:
        index = levels
        for colour, edge in edges:
            index[edge] = _GREYS + colours.index(colour)
        image = Image.fromarray(index)
        image.putpalette(_GREY_PALETTE + [v for c in colours for v in c])
        ink: dict[tuple[int, int, int], int | tuple[int, int, int]] = {
            c: _GREYS + i for i, c in enumerate(colours)
        }
    else:
        rgb = np.asarray(Image.fromarray(grey(ds, wanted)).convert("RGB")).copy()
        for colour, edge in edges:
            rgb[edge] = colour
        image = Image.fromarray(rgb)
        ink = {c: c for c in colours}
    if scale > 1:
        image = image.resize((cols * scale, rows * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    width = 1 if scale == 1 else 2 if scale < 4 else 3  # one pixel at full size, as viewers draw
    for roi, contours in drawn:
        for points in contours:
            xy = ((points + 0.5) * scale).ravel().tolist()
            if len(xy) >= 4:
                draw.line([*xy, xy[0], xy[1]], fill=ink[roi.color], width=width)
            else:
                draw.point(xy, fill=ink[roi.color])
    return _png(image)


def _isodoses(
    dose: DoseGrid | None, plane: Plane | None, rows: int, cols: int
) -> list[tuple[tuple[int, int, int], npt.NDArray[np.bool_]]]:
    if dose is None or plane is None:
        return []
    sampled = sample(dose, plane, rows, cols)
    return [] if sampled is None else isodose_edges(sampled, dose.maximum)


def sort_slices(datasets: list[Any]) -> list[Slice]:
    """A series' images in order along the slice normal, with the spacing between them."""
    planes = [(ds, plane_of(ds)) for ds in datasets]
    placed = [(ds, p) for ds, p in planes if p is not None]
    if len(placed) == len(planes) and placed:
        placed.sort(key=lambda dp: dp[1].position)
        positions = [p.position for _ds, p in placed]
        gaps = [b - a for a, b in itertools.pairwise(positions) if b - a > 1e-3]
        thickness = _thickness(placed[0][0])
        spacing = float(np.median(gaps)) if gaps else thickness
        return [Slice(ds, p, spacing) for ds, p in placed]
    ordered = sorted(datasets, key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))
    return [Slice(ds, plane_of(ds), _thickness(ds)) for ds in ordered]


def _thickness(ds: Any) -> float:
    try:
        return float(ds.SliceThickness) or 2.0
    except (AttributeError, TypeError, ValueError):
        return 2.0


class RenderCache:
    """Rendered PNGs by key, least recently used dropped past ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[Any, ...], make: Callable[[], bytes]) -> bytes:
        """The cached PNG for ``key``, made (outside the lock) when absent."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        made = make()
        with self._lock:
            if key not in self._items and len(made) <= self.limit:
                self._items[key] = made
                self._size += len(made)
                while self._size > self.limit:
                    _k, old = self._items.popitem(last=False)
                    self._size -= len(old)
        return made
