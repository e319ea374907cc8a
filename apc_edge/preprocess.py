"""The one preprocessing definition: frame -> model input tensor, and map -> frame.

Training, export and the runtime all call :class:`Preprocessor`, and its
parameters travel in ``manifest.json``, so an exported model sees exactly what
the training-time model saw.

Example::

    pre = Preprocessor.from_dict({"resize": [224, 224], "crop": None,
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    x = pre(frame)            # (1, 3, 224, 224) float32, RGB, normalized
    full = pre.map_to_frame(map224, frame.shape)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

MIN_FRAME_SIDE = 32
MAX_FRAME_PIXELS = 100_000_000    # a 100-megapixel sensor; larger frames are refused (resizing them takes seconds)
CHANNEL_KINDS = ("color", "mono", "any")


def image_kind(image: np.ndarray) -> str:
    """``"mono"`` for an (H, W) or (H, W, 1) image, else ``"color"`` (as :func:`load_image` returns them)."""
    return "mono" if image.ndim == 2 or image.shape[2] == 1 else "color"


def validate_frame(frame: object, max_pixels: int | None = MAX_FRAME_PIXELS) -> np.ndarray:
    """Return ``frame`` if it is a usable uint8 or uint16 mono or BGR image, else raise ``ValueError``.

    Accepted: ``uint8`` or ``uint16`` (a 10- to 16-bit camera or file, see :func:`to_8bit`) arrays of
    shape (H, W), (H, W, 1) or (H, W, 3), with both
    sides at least ``MIN_FRAME_SIDE`` pixels and at most ``max_pixels`` pixels (a larger frame
    would be resized for seconds, not judged in milliseconds; ``None``: no limit).
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frame dtype must be uint8 or uint16, got {frame.dtype}")
    if frame.ndim not in (2, 3):
        raise ValueError(f"frame must be HxW (mono) or HxWx3 (BGR), got {frame.ndim} dimensions {frame.shape}")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3):
        raise ValueError(f"frame must have 1 or 3 channels (BGR), got {frame.shape[2]} channels")
    if frame.size == 0:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    h, w = frame.shape[:2]
    if min(h, w) < MIN_FRAME_SIDE:
        raise ValueError(f"frame is too small: {w}x{h} pixels, need at least {MIN_FRAME_SIDE} on each side")
    if max_pixels is not None and h * w > max_pixels:
        raise ValueError(f"frame is too large: {w}x{h} = {h * w} pixels, more than the limit of {max_pixels} "
                         f"(Inspector(max_frame_pixels=...))")
    return frame


def bit_depth_of(image: np.ndarray) -> int:
    """Significant bits of an image's values: 8 for uint8, else the bits its largest value needs (at least 9,
    so that a dark 16-bit image is not taken for an 8-bit one)."""
    if image.dtype == np.uint8:
        return 8
    return int(min(16, max(9, int(image.max()).bit_length())))


def to_8bit(frame: np.ndarray, bit_depth: int = 16) -> np.ndarray:
    """A uint8 frame as it is; a uint16 frame scaled from ``bit_depth`` bits (9-16; a 12-bit camera: 12) to
    0..255, values above that range clipped. One fixed scale for every frame, so brightness means the same
    on every image (never each image's own maximum).

    Example::

        to_8bit(mono12_frame, bit_depth=12)       # 4095 -> 255
    """
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype != np.uint16:
        raise ValueError(f"frame dtype must be uint8 or uint16, got {frame.dtype}")
    if not (isinstance(bit_depth, int) and 9 <= bit_depth <= 16):
        raise ValueError(f"bit depth of a uint16 frame must be an integer in 9..16, got {bit_depth!r}")
    return cv2.convertScaleAbs(frame, alpha=255.0 / ((1 << bit_depth) - 1))


def load_image(path: str | Path, bit_depth: int | None = None) -> np.ndarray:
    """Read an image file as mono (H, W) or BGR (H, W, 3): uint8, or uint16 for a 16-bit file (BGRA loses
    its alpha; a colour file whose channels are equal is mono). ``bit_depth``: also bring it to uint8 with
    :func:`to_8bit` at that depth (what CutPaste and reports need). ``ValueError`` if it cannot be read."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image file {path}")
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: {img.dtype} pixels are not supported (8- or 16-bit integer images only)")
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3 and _is_grey(img):
        img = img[:, :, 0].copy()
    return img if bit_depth is None else to_8bit(img, bit_depth)


def _is_grey(img: np.ndarray) -> bool:
    return bool(np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2]))


@dataclass(frozen=True)
class Preprocessor:
    """Resize (or scale and pad), optional centre crop, BGR->RGB (mono replicated), /255, mean/std.

    ``channels`` says what the model was trained on: a ``"color"`` model refuses mono frames
    (``ValueError``: a colour defect cannot be seen in them), a ``"mono"`` model turns colour frames grey
    first, ``"any"`` (models made before it was recorded, mixed training sets) takes both.

    ``bit_depth``: the significant bits of the training images (8, or 9-16 for 16-bit files). A uint16
    frame is scaled to 0..255 from that many bits (from 16 for a model trained on 8-bit images), a uint8
    frame is used as it is (:func:`to_8bit`).

    ``mode="stretch"`` resizes every frame to ``resize``. ``mode="pad"`` keeps the
    pixel scale fixed instead: the frame is scaled by ``scale`` (less if it would not
    fit) and centred on a ``resize`` canvas of the mean colour. Use ``pad`` when frame
    sizes vary, so texture keeps one scale; cameras with a fixed frame size need
    neither.
    """

    resize: tuple[int, int] = (224, 224)          # (height, width) after resize: the model input
    crop: tuple[int, int] | None = None           # (height, width) centre crop, or None (stretch mode only)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mode: str = "stretch"                         # "stretch" or "pad"
    scale: float = 1.0                            # pad mode: pixel scale factor
    channels: str = "any"                         # what the model was trained on: "color", "mono" or "any"
    bit_depth: int = 8                            # significant bits of the training images (8, or 9..16)

    def __post_init__(self):
        if self.mode not in ("stretch", "pad"):
            raise ValueError(f"preprocessing mode must be 'stretch' or 'pad', got {self.mode!r}")
        if self.channels not in CHANNEL_KINDS:
            raise ValueError(f"preprocessing channels must be one of {', '.join(CHANNEL_KINDS)}, got {self.channels!r}")
        if self.mode == "pad" and (self.crop or not self.scale > 0):
            raise ValueError("pad mode takes a positive scale and no crop")
        if not (isinstance(self.bit_depth, int) and not isinstance(self.bit_depth, bool) and 8 <= self.bit_depth <= 16):
            raise ValueError(f"preprocessing bit_depth must be an integer in 8..16, got {self.bit_depth!r}")

    @property
    def uint16_bits(self) -> int:
        """The bit depth a uint16 frame is scaled from."""
        return self.bit_depth if self.bit_depth > 8 else 16

    def to_8bit(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` as uint8, by this model's bit-depth rule (:func:`to_8bit`)."""
        return to_8bit(frame, self.uint16_bits)

    def placement(self, frame_hw: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the frame on the resized canvas."""
        rh, rw = self.resize
        if self.mode == "stretch":
            return 0, 0, rh, rw
        h, w = frame_hw[:2]
        s = min(self.scale, rh / h, rw / w)
        nh, nw = max(1, min(rh, round(h * s))), max(1, min(rw, round(w * s)))
        return (rh - nh) // 2, (rw - nw) // 2, nh, nw

    def patch_region(self, frame_hw: tuple[int, ...], grid: tuple[int, int]) -> np.ndarray | None:
        """Pad mode: bool (h, w) of the patch cells that overlap the frame on the canvas (the part and the
        ring of cells on its edge); ``None`` in stretch mode, where every cell is the frame.

        Example::

            Preprocessor(resize=(256, 384), mode="pad", scale=0.5).patch_region((100, 200), (32, 48))
        """
        if self.mode != "pad":
            return None
        top, left, nh, nw = self.placement(frame_hw)
        (H, W), (gh, gw) = self.resize, grid
        region = np.zeros((gh, gw), bool)
        region[int(top * gh // H):-(-(top + nh) * gh // H), int(left * gw // W):-(-(left + nw) * gw // W)] = True
        return region

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        try:
            crop = d.get("crop")
            return cls(resize=tuple(int(v) for v in d["resize"]),
                       crop=tuple(int(v) for v in crop) if crop else None,
                       mean=tuple(float(v) for v in d["mean"]),
                       std=tuple(float(v) for v in d["std"]),
                       mode=str(d.get("mode", "stretch")), scale=float(d.get("scale", 1.0)),
                       channels=str(d.get("channels", "any")), bit_depth=d.get("bit_depth", 8))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid preprocessing block {d!r}: {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["color"] = "RGB"
        d["layout"] = "NCHW"
        d["value_scale"] = 1.0 / 255.0
        return d

    @property
    def input_hw(self) -> tuple[int, int]:
        """Height and width of the tensor the model receives."""
        return self.crop if self.crop else self.resize

    def _crop_box(self) -> tuple[int, int, int, int]:
        rh, rw = self.resize
        ch, cw = self.input_hw
        top, left = (rh - ch) // 2, (rw - cw) // 2
        return top, left, ch, cw

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Turn a uint8 or uint16 mono/BGR frame into a (1, 3, H, W) float32 tensor."""
        return self.batch([frame])

    def batch(self, frames: list[np.ndarray]) -> np.ndarray:
        """Preprocess several frames into one (N, 3, H, W) float32 array: the frame is resized once (to the
        model input, INTER_AREA when shrinking), then one OpenCV call swaps BGR to RGB, subtracts the mean,
        divides by the standard deviation (both in 0..255 units: the same as /255 first) and lays it out NCHW,
        straight into the output (a fresh 3 MB buffer per frame, then copied, cost 2 ms at 512x512)."""
        out = np.empty((len(frames), 3, *self.input_hw), dtype=np.float32)
        params = self._blob_params()
        for i, frame in enumerate(frames):
            bgr = self._to_bgr_resized(self.to_8bit(validate_frame(frame, max_pixels=None)))  # caller sets the limit
            view = out[i:i + 1]
            blob = cv2.dnn.blobFromImageWithParams(bgr, view, params)
            if not np.may_share_memory(blob, view):    # an OpenCV that allocated a blob of its own
                view[...] = blob
        return out

    def normalize_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """A uint8 RGB (H, W, 3) image already at the model-input size -> (3, H, W) float32, normalized exactly
        as :meth:`batch` normalizes frames (AnomalousPatchCore's augmented samples take this path)."""
        return cv2.dnn.blobFromImageWithParams(np.ascontiguousarray(rgb), self._blob_params(swap=False))[0]

    def _blob_params(self, swap: bool = True):
        params = cv2.dnn.Image2BlobParams()
        params.scalefactor = tuple(1.0 / (255.0 * s) for s in self.std) + (0.0,)
        params.mean = tuple(255.0 * m for m in self.mean) + (0.0,)      # RGB order: applied after the swap
        params.swapRB = swap
        params.ddepth = cv2.CV_32F
        return params

    def _to_bgr_resized(self, frame: np.ndarray) -> np.ndarray:
        kind = image_kind(frame)
        if self.channels == "color" and kind == "mono":
            raise ValueError(f"frame is mono {frame.shape} but the model was trained on colour images: its colour "
                             f"defects would go unseen; set the camera to a colour pixel format (BGR8)")
        if self.channels == "mono" and kind == "color":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)      # as the mono training images were seen
        top, left, nh, nw = self.placement(frame.shape)
        h, w = frame.shape[:2]
        interp = cv2.INTER_AREA if (h > nh or w > nw) else cv2.INTER_LINEAR
        small = cv2.resize(frame, (nw, nh), interpolation=interp)
        bgr = cv2.cvtColor(small.reshape(nh, nw), cv2.COLOR_GRAY2BGR) if small.ndim == 2 or small.shape[2] == 1 \
            else small
        if self.mode == "pad":
            fill = np.round(np.asarray(self.mean)[::-1] * 255).astype(np.uint8)     # the mean colour, BGR
            canvas = np.empty((*self.resize, 3), np.uint8)
            canvas[:] = fill
            canvas[top:top + nh, left:left + nw] = bgr
            bgr = canvas
        if self.crop:
            top, left, ch, cw = self._crop_box()
            bgr = np.ascontiguousarray(bgr[top:top + ch, left:left + cw])
        return bgr

    def map_to_frame(self, input_map: np.ndarray, frame_shape: tuple[int, ...], fill: float | None = None) -> np.ndarray:
        """Resize a map at model-input size back onto the frame's pixel grid.

        Outside the centre crop (if any) the map holds ``fill`` (default: the map's minimum).
        """
        h, w = frame_shape[:2]
        m = input_map.astype(np.float32, copy=False)
        if self.mode == "pad":
            top, left, nh, nw = self.placement(frame_shape)
            m = m[top:top + nh, left:left + nw]
        if self.crop:
            top, left, ch, cw = self._crop_box()
            full = np.full(self.resize, m.min() if fill is None else fill, np.float32)
            full[top:top + ch, left:left + cw] = m
            m = full
        return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)

    def to_input_grid(self, array: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Bring a frame-sized map or mask to model-input scale (same resize and crop as frames).

        In pad mode the result covers the frame's own region only (no canvas padding).
        """
        _, _, nh, nw = self.placement(array.shape)
        src = array.astype(np.uint8) if array.dtype == bool else array
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        out = cv2.resize(src, (nw, nh), interpolation=interp)
        if self.crop:
            top, left, ch, cw = self._crop_box()
            out = out[top:top + ch, left:left + cw]
        return out.astype(bool) if array.dtype == bool else out

    def to_input_canvas(self, array: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Like :meth:`to_input_grid`, but always of the model-input size: in pad mode the frame's region
        sits where the frame sits on the canvas and the rest is zero (a mask aligned with ``self(frame)``)."""
        out = self.to_input_grid(array, nearest)
        if self.mode != "pad":
            return out
        top, left, nh, nw = self.placement(array.shape)
        canvas = np.zeros((*self.input_hw, *out.shape[2:]), out.dtype)
        canvas[top:top + nh, left:left + nw] = out
        return canvas


def patch_regions(pre: Preprocessor, paths, grid: tuple[int, int], part_only: bool) -> list:
    """``pre.patch_region`` of each image file or array (``None`` for each unless ``part_only`` in pad mode).

    Example::

        regions = patch_regions(pre, held_out_paths, (32, 48), part_only=True)
    """
    if not part_only or pre.mode != "pad":
        return [None] * len(paths)
    return [pre.patch_region((p if isinstance(p, np.ndarray) else load_image(p)).shape, grid) for p in paths]

