"""Enhancement: pure image tools, a rule policy that picks them, and the SSIM guard.

* **Tools** — pure functions on uint8 arrays (H×W×3 RGB or H×W grey; the same mode comes
  out), each registered in ``ENHANCERS`` as an :class:`EnhanceTool` with default parameters.
* **Policy** — :class:`RulePolicy` turns an image's scores (``SCORE_NAMES``, measured by
  :func:`policy_scores` on a copy whose longer side is at most ``POLICY_SIDE``) into an
  ordered list of :class:`ToolCall`, and only for a measured defect: a good photo gets none.
  It is the offline default of the :class:`EnhancePolicy` protocol, which an LLM-backed
  policy can implement as well.
* **Guard** — :func:`enhance` applies the calls and undoes them when the greyscale SSIM of the
  result against the input falls below a floor.

Why the corrections are mild: SSIM between input and output is low exactly when a correction
is large. Fully restoring a photo darkened to 30 % has SSIM ≈ 0.4 to its input, and fully
removing σ≈10 noise ≈ 0.6, however good the result. Under a per-image floor of 0.80 only
changes of up to about 1.5× in local brightness or contrast survive, so the rule policy sizes
its corrections to that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import cv2
import numpy as np

from datasetagent.errors import ConfigError
from datasetagent.records import ProcessingStep
from datasetagent.registry import Registry
from datasetagent.tools.quality import _NOISE_TAPS, relative_sharpness, score_array
from datasetagent.tools.ssim import ssim, to_gray

ParamValue = float | int | str
Params = dict[str, ParamValue]
ToolFn = Callable[..., np.ndarray]
F = TypeVar("F", bound=ToolFn)

#: Per-image SSIM floor (greyscale, before vs after). The spec's target is a *mean* SSIM of at
#: least 0.94; most images get no tools (SSIM 1.0), and the mean stays ≥ 0.94 as long as at
#: most (1 − 0.94) / (1 − 0.80) = 30 % of images sit at the floor. The rule policy's
#: corrections land at 0.80–0.99 on the test photos; a higher floor undoes most low-light and
#: denoising fixes, a lower one lets through changes that alter what the image shows.
DEFAULT_SSIM_FLOOR = 0.80

#: Longer side of the copy the policy's scores are measured on (the thresholds were calibrated
#: on photos of this size; noise and sharpness readings depend on scale).
POLICY_SIDE = 640
#: Scores the policy reads (see :func:`policy_scores`); the colour ones only for RGB images.
SCORE_NAMES = (
    "brightness", "shadows", "highlights", "contrast", "noise", "sharpness", "entropy",
    "flat_noise", "color_cast", "edge_cast",
)  # fmt: skip
#: Scores the policy can do without: the colour ones (a grey image has none) and
#: ``flat_noise``; a rule whose second reading is missing does not fire.
OPTIONAL_SCORES = ("flat_noise", "color_cast", "edge_cast")
MODES = ("RGB", "L")


# --------------------------------------------------------------------------- tool registry


@dataclass(frozen=True)
class EnhanceTool:
    """A registered enhancement: name, function, default parameters and kind.

    ``geometric`` tools change the image size (fitting to the spec size); :func:`enhance` runs
    them after every photometric tool and leaves them out of the SSIM guard.
    """

    name: str
    fn: ToolFn
    defaults: Params = field(default_factory=dict, hash=False)
    geometric: bool = False
    #: One line for a user, or for an LLM policy choosing tools.
    description: str = ""

    def resolve(self, params: Mapping[str, object]) -> Params:
        """Defaults overlaid with ``params``, each coerced to its default's type."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"enhancement tool {self.name!r} has no parameter {', '.join(unknown)}; "
                f"its parameters are: {', '.join(self.defaults) or 'none'}"
            )
        out: Params = dict(self.defaults)
        for key, value in params.items():
            coerced = _coerce(self.defaults[key], value)
            if coerced is None:
                default = self.defaults[key]
                kind = {int: "an integer", float: "a number"}.get(type(default), "a string")
                raise ConfigError(
                    f"enhancement tool {self.name!r}: parameter {key!r} must be {kind}, "
                    f"got {value!r}"
                )
            out[key] = coerced
        return out

    def __call__(self, img: np.ndarray, **params: ParamValue) -> np.ndarray:
        return self.fn(img, **self.resolve(params))


def _coerce(default: ParamValue, value: object) -> ParamValue | None:
    """``value`` as the type of ``default`` (an LLM may send "5" or 5.0 for an int); None if not."""
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if isinstance(default, int):
        return int(number) if number.is_integer() else None
    return number


ENHANCERS: Registry[EnhanceTool] = Registry("enhancement tool", "datasetagent.enhancers")


def _register(
    name: str, description: str, *, geometric: bool = False, **defaults: ParamValue
) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        ENHANCERS.add(name, EnhanceTool(name, fn, dict(defaults), geometric, description))
        return fn

    return decorate


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8:
        raise ValueError(f"enhancement tools take uint8 images, got {img.dtype}; see to_uint8()")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"enhancement tools take H×W or H×W×3 arrays, got shape {img.shape}")


def _require(ok: bool, tool: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"enhancement tool {tool!r} needs {what}")


def _apply_lut(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.LUT(img, np.clip(lut + 0.5, 0, 255).astype(np.uint8)))


# --------------------------------------------------------------------------- photometric tools


@_register("gamma", "tone curve out = in^gamma on 0..1; gamma < 1 brightens", gamma=1.0)
def adjust_gamma(img: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Power-law tone curve on every channel (0 and 255 stay fixed)."""
    _check_image(img)
    _require(0.05 <= gamma <= 20, "gamma", f"gamma in [0.05, 20], got {gamma}")
    return _apply_lut(img, 255.0 * (np.arange(256) / 255.0) ** gamma)


@_register(
    "clahe", "local contrast (CLAHE) on L of LAB; lifts shadows", clip_limit=2.0, tile_grid=8
)
def clahe(img: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of L in LAB (of grey for H×W)."""
    _check_image(img)
    _require(clip_limit > 0 and tile_grid >= 1, "clahe", "clip_limit > 0 and tile_grid ≥ 1")
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid),) * 2)
    if img.ndim == 2:
        return np.asarray(op.apply(img))
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = op.apply(np.ascontiguousarray(lab[:, :, 0]))
    return np.asarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


@_register(
    "denoise",
    "non-local means; h is the strength in grey levels (about the noise σ)",
    h=5.0,
    template_window=7,
    search_window=21,
)
def denoise(
    img: np.ndarray, h: float = 5.0, template_window: int = 7, search_window: int = 21
) -> np.ndarray:
    """OpenCV fast non-local means; the colour version filters luma and chroma with ``h``."""
    _check_image(img)
    _require(h > 0, "denoise", f"h > 0, got {h}")
    tw, sw = int(template_window) | 1, int(search_window) | 1  # odd sizes
    if img.ndim == 2:
        return np.asarray(cv2.fastNlMeansDenoising(img, None, float(h), tw, sw))
    return np.asarray(cv2.fastNlMeansDenoisingColored(img, None, float(h), float(h), tw, sw))


@_register("sharpen", "unsharp mask: in + amount·(in − blur_sigma(in))", amount=0.5, sigma=1.0)
def sharpen(img: np.ndarray, amount: float = 0.5, sigma: float = 1.0) -> np.ndarray:
    """Unsharp mask with a Gaussian of ``sigma`` pixels; saturates at 0 and 255."""
    _check_image(img)
    _require(amount >= 0 and sigma > 0, "sharpen", f"amount ≥ 0, sigma > 0, got {amount}, {sigma}")
    blurred = cv2.GaussianBlur(img, (0, 0), float(sigma))
    return np.asarray(cv2.addWeighted(img, 1.0 + amount, blurred, -float(amount), 0.0))


@_register(
    "white_balance",
    "grey-world white balance; no-op on grey images",
    strength=1.0,
    max_gain=2.0,
)
def white_balance(img: np.ndarray, strength: float = 1.0, max_gain: float = 2.0) -> np.ndarray:
    """Grey-world: channel c is scaled by (mean / mean_c)^strength, clipped to [1/max_gain,
    max_gain]."""
    _check_image(img)
    _require(0 <= strength <= 1 and max_gain >= 1, "white_balance", "0≤strength≤1, max_gain≥1")
    if img.ndim == 2:
        return img
    means = img.reshape(-1, 3).mean(axis=0)
    gains = np.clip((means.mean() / np.maximum(means, 1e-6)) ** strength, 1 / max_gain, max_gain)
    levels = np.arange(256, dtype=np.float64)
    return _apply_lut(img, np.stack([levels * g for g in gains], axis=1).reshape(256, 1, 3))


@_register(
    "auto_contrast",
    "percentile stretch, same curve for all channels, gain capped at max_gain",
    low=0.5,
    high=99.5,
    max_gain=4.0,
)
def auto_contrast(
    img: np.ndarray, low: float = 0.5, high: float = 99.5, max_gain: float = 4.0
) -> np.ndarray:
    """Stretch the ``low``..``high`` percentile range of all values towards 0..255.

    One curve serves all channels (no colour shift). When the full stretch would need a gain
    above ``max_gain``, the gain is capped and the stretched range stays centred on the old
    one, shifted only as far as needed to fit inside 0..255.
    """
    _check_image(img)
    ok = 0 <= low < high <= 100 and max_gain >= 1
    _require(ok, "auto_contrast", "0 ≤ low < high ≤ 100 and max_gain ≥ 1")
    lo, hi = (float(v) for v in np.percentile(img, [low, high]))
    if hi - lo < 1:
        return img
    gain = min(255.0 / (hi - lo), float(max_gain))
    width = (hi - lo) * gain
    start = min(max((lo + hi - width) / 2, 0.0), 255.0 - width)
    return _apply_lut(img, start + (np.arange(256, dtype=np.float64) - lo) * gain)


# --------------------------------------------------------------------------- geometric tools


def resize_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to exactly ``size`` = (width, height); area averaging down, bicubic up."""
    width, height = size
    _require(width >= 1 and height >= 1, "resize", f"a size of at least 1×1, got {size}")
    if (img.shape[1], img.shape[0]) == (width, height):
        return img
    shrink = width * height < img.shape[0] * img.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(img, (width, height), interpolation=interp))


def letterbox_geometry(
    src_size: tuple[int, int], size: tuple[int, int]
) -> tuple[float, int, int, int, int]:
    """(scale, inner width, inner height, left pad, top pad) for letterboxing ``src_size``.

    Sizes are (width, height). Annotations map as x' = x·scale + left, y' = y·scale + top.
    """
    (sw, sh), (width, height) = src_size, size
    scale = min(width / sw, height / sh)
    nw, nh = max(1, min(width, round(sw * scale))), max(1, min(height, round(sh * scale)))
    return scale, nw, nh, (width - nw) // 2, (height - nh) // 2


def letterbox(img: np.ndarray, size: tuple[int, int], *, fill: int = 114) -> np.ndarray:
    """Fit into ``size`` = (width, height) keeping the aspect ratio; pad evenly with ``fill``."""
    width, height = size
    _require(width >= 1 and height >= 1, "letterbox", f"a size of at least 1×1, got {size}")
    _, nw, nh, left, top = letterbox_geometry((img.shape[1], img.shape[0]), size)
    out = np.full((height, width, *img.shape[2:]), fill, dtype=img.dtype)
    out[top : top + nh, left : left + nw] = resize_to(img, (nw, nh))
    return out


@_register(
    "letterbox",
    "fit into width×height keeping the aspect ratio, padding with grey level fill",
    geometric=True,
    width=640,
    height=640,
    fill=114,
)
def _letterbox_tool(img: np.ndarray, width: int, height: int, fill: int) -> np.ndarray:
    return letterbox(img, (width, height), fill=fill)


@_register("resize", "resize to exactly width×height", geometric=True, width=640, height=640)
def _resize_tool(img: np.ndarray, width: int, height: int) -> np.ndarray:
    return resize_to(img, (width, height))


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class ToolCall:
    """One use of a registered tool; parameters left out take the tool's defaults."""

    name: str
    params: Params = field(default_factory=dict, hash=False)


class EnhancePolicy(Protocol):
    """Chooses tools for one image from its scores; ``mode`` is ``"RGB"`` or ``"L"``."""

    def choose(self, scores: Mapping[str, float], mode: str) -> list[ToolCall]: ...


@dataclass(frozen=True)
class RuleThresholds:
    """Where the rule policy acts; calibrated for :func:`policy_scores` at POLICY_SIDE.

    Each correction needs a measured defect: a score past its threshold *and* a second reading
    that tells the defect from a picture that merely looks that way (a night scene is dark but
    its lights reach white; an orange filling the frame has a grey-world "cast" its edges do not
    share). Calibrated on the 48 photos of benchmarks/enhance_bench.py, of which it changes two
    (an abstract rendered wallpaper and a close-up of a sign, both flat), and on photos
    darkened, flattened, tinted, blurred and noised (tests/test_enhance.py).
    """

    dark_brightness: float = 0.25  # below, with highlights below dark_highlights: low light
    dark_highlights: float = 0.50  # … even the brightest 1 % is at most mid-grey
    bright_brightness: float = 0.85  # above, with shadows above bright_shadows: over-exposed
    bright_shadows: float = 0.50  # … even the darkest 1 % is lighter than mid-grey
    max_brightening: float = 1.5  # most a gamma may multiply mean brightness by
    max_darkening: float = 1.3  # most a gamma may divide mean brightness by
    target_brightness: float = 0.40  # what a low-light fix aims at, within the cap
    noise: float = 12.0  # above, with flat_noise above flat_noise: denoise first
    flat_noise: float = 8.5  # σ where the image is flattest (texture reads up to ~7.5 there)
    denoise_factor: float = 0.25  # h = noise × this, clipped to [h_min, h_max]
    denoise_h_min: float = 3.0
    denoise_h_max: float = 10.0
    color_cast: float = 0.08  # above, with edge_cast above edge_cast: a colour cast (RGB)
    edge_cast: float = 0.22  # the edges' imbalance along the grey-world cast's direction
    contrast: float = 30.0  # below, with a narrow tonal range (and no gamma): stretch
    tonal_range: float = 0.40  # highlights − shadows below this: the range is narrow
    target_contrast: float = 45.0
    max_contrast_gain: float = 1.5
    blur_ratio: float = 0.02  # sharpness / contrast² below: sharpen, if not noisy
    wide_blur_ratio: float = 0.004  # below: the blur is wide, use a 2 px unsharp mask
    sharpen_amount: float = 0.6
    min_contrast: float = 2.0  # below, or entropy below min_entropy: leave the image alone
    min_entropy: float = 1.0


#: Share of a grey-world correction the rule policy applies (see rule 3 below).
WB_STRENGTH = 0.5


class RulePolicy:
    """The offline default policy: a tool only for a measured defect, sized for the guard.

    Rules, in the order of the calls they return (thresholds from :class:`RuleThresholds`):

    1. Near-blank images (contrast < 2 or entropy < 1 bit) get nothing: nothing to fix.
    2. ``denoise`` when noise σ > 12 and the flattest quarter of the image is noisy too
       (flat_noise > 8.5), h = 0.25·σ clipped to [3, 10]. Fine texture (foliage, fur, gravel)
       inflates σ as much as noise does, but only noise fills the flat parts as well. First,
       because every later step amplifies noise. A larger h is undone by the guard.
    3. ``white_balance`` (grey-world) at half strength, RGB only, when the channel means are
       off balance (color_cast > 0.08) *and* the edges agree (edge_cast > 0.22): a cast tints
       every edge the same way, while a frame filled by a coloured subject (an orange, grass,
       a sunset) has edges of other colours, and correcting it would grey out the very colour
       that may define its class (the SSIM guard, which compares grey images, cannot see
       that). Half, because even then the scene may be warm by nature. Before any tone curve,
       which would change the channel means unevenly.
    4. ``gamma`` < 1 when the image is under-exposed: brightness < 0.25 and its highlights
       (99th percentile) below 0.5, raising mean brightness by at most 1.5× (towards 0.40). A
       dark scene whose lights reach white is not under-exposed. ``gamma`` > 1 when it is
       over-exposed: brightness > 0.85 and shadows (1st percentile) above 0.5, lowering it by
       at most 1.3×.
    5. ``auto_contrast`` when the image is flat: contrast (grey std) < 30 and its tonal range
       (highlights − shadows) < 0.4, and no gamma was chosen (dark images are flat because
       they are dark); gain capped at min(45 / contrast, 1.5).
    6. ``sharpen`` (amount 0.6, σ 1 px, or 2 px when sharpness / contrast² < 0.004) when
       sharpness / contrast² < 0.02 and the image is not noisy. Dividing by contrast² makes the
       Laplacian variance independent of exposure. Last, so nothing amplifies its halo.

    ``clahe`` is registered but not chosen: on the test photos even a mild CLAHE costs
    0.15–0.25 SSIM against the input, so the guard would almost always undo it. The colour
    scores are optional (a grey image has none), and so is ``flat_noise``: without
    ``edge_cast`` there is no white balance, without ``flat_noise`` no denoising, since the
    first reading alone cannot tell the defect from a colourful or detailed subject.
    """

    def __init__(self, thresholds: RuleThresholds | None = None) -> None:
        self.t = thresholds or RuleThresholds()

    def choose(self, scores: Mapping[str, float], mode: str) -> list[ToolCall]:
        if mode not in MODES:
            raise ConfigError(f"unknown colour mode {mode!r}: expected one of {', '.join(MODES)}")
        missing = [n for n in SCORE_NAMES if n not in OPTIONAL_SCORES and n not in scores]
        if missing:
            raise ConfigError(
                f"the enhancement policy needs the scores {', '.join(missing)}; "
                "compute them with datasetagent.tools.enhance.policy_scores()"
            )
        t = self.t
        contrast, noise = scores["contrast"], scores["noise"]
        if contrast < t.min_contrast or scores["entropy"] < t.min_entropy:
            return []
        calls: list[ToolCall] = []
        noisy = noise > t.noise and scores.get("flat_noise", 0.0) > t.flat_noise
        if noisy:
            h = min(max(noise * t.denoise_factor, t.denoise_h_min), t.denoise_h_max)
            calls.append(ToolCall("denoise", {"h": round(h, 2)}))
        cast = scores.get("color_cast", 0.0) > t.color_cast
        if mode == "RGB" and cast and scores.get("edge_cast", 0.0) > t.edge_cast:
            calls.append(ToolCall("white_balance", {"strength": WB_STRENGTH}))
        tone = self._gamma(scores)
        if tone is not None:
            calls.append(ToolCall("gamma", {"gamma": tone}))
        elif contrast < t.contrast and scores["highlights"] - scores["shadows"] < t.tonal_range:
            gain = min(max(t.target_contrast / contrast, 1.0), t.max_contrast_gain)
            calls.append(ToolCall("auto_contrast", {"max_gain": round(gain, 3)}))
        ratio = relative_sharpness(scores)  # the blurry check's number
        if not noisy and ratio < t.blur_ratio:
            sigma = 2.0 if ratio < t.wide_blur_ratio else 1.0
            calls.append(ToolCall("sharpen", {"amount": t.sharpen_amount, "sigma": sigma}))
        return calls

    def _gamma(self, scores: Mapping[str, float]) -> float | None:
        """The gamma of the tone correction for an under- or over-exposed image, or None."""
        t = self.t
        b = min(max(scores["brightness"], 1e-3), 1 - 1e-3)
        if b < t.dark_brightness and scores["highlights"] < t.dark_highlights:
            target = min(t.target_brightness, b * t.max_brightening)
        elif b > t.bright_brightness and scores["shadows"] > t.bright_shadows:
            target = b / t.max_darkening
        else:
            return None
        return round(math.log(target) / math.log(b), 3)


def edge_cast(img: np.ndarray) -> float:
    """How far the colour edges of an RGB uint8 image agree with its grey-world cast (0-1+).

    Grey-world reads the channel means, grey-edge (van de Weijer et al., 2007) the channels'
    mean gradient magnitudes; both are ≈ equal across channels for a neutral scene. A cast
    scales every channel, so it shifts both estimates the same way; a large coloured subject
    shifts the means but not its edges (or the other way). The score is the grey-edge
    imbalance (largest relative deviation of a channel) times the cosine between the two
    estimates' relative deviations, floored at 0: high only when both point the same way.
    Gradients are Sobel's, their magnitude |gx| + |gy| (integer arithmetic, ~1 ms at 640 px).
    """
    if img.ndim != 3:
        return 0.0
    means = np.array(cv2.mean(img)[:3])
    edges = np.array([_mean_gradient(channel) for channel in cv2.split(img)])
    if means.mean() < 1e-6 or edges.mean() < 1e-6:
        return 0.0
    world, edge = means / means.mean() - 1.0, edges / edges.mean() - 1.0
    norms = float(np.linalg.norm(world) * np.linalg.norm(edge))
    if norms < 1e-12:
        return 0.0
    agreement = float(world @ edge) / norms
    return max(agreement, 0.0) * float(np.abs(edge).max())


#: Share of the image, its least structured pixels, that ``flat_noise`` is measured on.
FLAT_SHARE = 0.25


def flat_noise(gray: np.ndarray) -> float:
    """Immerkær's noise σ (as ``quality.score_array``'s ``noise``) measured only where the
    image is flattest: the ``FLAT_SHARE`` of pixels with the weakest gradient after a 1 px
    Gaussian blur (which the noise itself hardly moves). Noise fills flat areas; texture
    does not."""
    if min(gray.shape) < 3:
        return 0.0
    conv = cv2.sepFilter2D(gray, cv2.CV_16S, _NOISE_TAPS, _NOISE_TAPS)[1:-1, 1:-1]
    smooth = cv2.GaussianBlur(gray, (0, 0), 1.0)
    gradient = _gradient(smooth)[1:-1, 1:-1]
    # the FLAT_SHARE quantile of the integer gradient, from its histogram
    counts = np.bincount(gradient.ravel())
    cut = int(np.searchsorted(np.cumsum(counts), FLAT_SHARE * gradient.size))
    flat = (gradient <= cut).astype(np.uint8)
    return float(cv2.mean(np.abs(conv), mask=flat)[0] * math.sqrt(math.pi / 2) / 6)


def _gradient(gray: np.ndarray) -> np.ndarray:
    """|∂x| + |∂y| of a uint8 plane by Sobel, as uint16."""
    gx = cv2.Sobel(gray, cv2.CV_16S, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_16S, 0, 1)
    return np.asarray(cv2.add(np.abs(gx), np.abs(gy), dtype=cv2.CV_16U))


def _mean_gradient(gray: np.ndarray) -> float:
    return float(cv2.mean(_gradient(gray))[0])


def policy_scores(img: np.ndarray) -> dict[str, float]:
    """The scores the policy reads, of a uint8 image reduced to at most POLICY_SIDE: those of
    :func:`datasetagent.tools.quality.score_array`, plus ``flat_noise`` and, for RGB images,
    ``edge_cast``."""
    gray = to_gray(img)
    scores = score_array(img, gray)
    scores["flat_noise"] = flat_noise(gray)
    if img.ndim == 3:
        scores["edge_cast"] = edge_cast(img)
    return scores


def choose_tools(scores: Mapping[str, float], mode: str) -> list[ToolCall]:
    """The rule policy's calls for one image (see :class:`RulePolicy`)."""
    return RulePolicy().choose(scores, mode)


# --------------------------------------------------------------------------- guarded apply


@dataclass(frozen=True)
class EnhanceResult:
    """The image after :func:`enhance`, what was done to it, and the guard's verdict."""

    image: np.ndarray
    #: Applied calls in order (resolved parameters), plus ``ssim_guard`` if a photometric ran.
    steps: tuple[ProcessingStep, ...]
    #: Greyscale SSIM of the photometric result against the input (1.0 when none ran).
    ssim: float
    #: True when the guard threw the photometric changes away.
    undone: bool


def enhance(
    img: np.ndarray, calls: Sequence[ToolCall], *, ssim_floor: float = DEFAULT_SSIM_FLOOR
) -> EnhanceResult:
    """Apply ``calls`` to a uint8 image; undo them when SSIM to the input is below the floor.

    Photometric calls run in the given order; geometric ones (``letterbox``, ``resize``) run
    after all of them, in their own order, and are outside the guard: the guard compares the
    photometric result with the input at the input's size. Fitting to the spec size is a
    requirement rather than an improvement, and padding could not be compared anyway. When the
    guard fires, the photometric changes are dropped (``undone=True``) but geometric calls still
    apply, so the result always has the size asked for.

    ``steps`` holds each applied call with its resolved parameters (defaults included) and one
    ``ssim_guard`` step: the SSIM, the floor, whether it undid, and which tools it undid.
    """
    if not 0.0 <= ssim_floor <= 1.0:
        raise ConfigError(f"ssim_floor must be in [0, 1], got {ssim_floor}")
    _check_image(img)
    resolved = [(tool, tool.resolve(c.params)) for c in calls for tool in [ENHANCERS.get(c.name)]]
    photometric = [(tool, params) for tool, params in resolved if not tool.geometric]
    geometric = [(tool, params) for tool, params in resolved if tool.geometric]

    out, score, undone = img, 1.0, False
    steps: list[ProcessingStep] = []
    if photometric:
        for tool, params in photometric:
            out = tool.fn(out, **params)
            steps.append(ProcessingStep(name=tool.name, params=dict(params)))
        score = ssim(to_gray(img), to_gray(out))
        undone = score < ssim_floor
        guard: dict[str, float | bool | str] = {"ssim": round(score, 4), "floor": ssim_floor}
        guard["undone"] = undone
        if undone:
            guard["undid"] = ",".join(tool.name for tool, _ in photometric)
            out, steps = img, []
        steps.append(ProcessingStep(name="ssim_guard", params=dict(guard)))
    for tool, params in geometric:
        out = tool.fn(out, **params)
        steps.append(ProcessingStep(name=tool.name, params=dict(params)))
    return EnhanceResult(image=out, steps=tuple(steps), ssim=score, undone=undone)
