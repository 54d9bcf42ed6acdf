"""Enhancement tools, the rule policy and the SSIM guard, on scikit-learn's two sample photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from datasetagent.errors import ConfigError
from datasetagent.tools.decode import scale_to_8bit
from datasetagent.tools.enhance import (
    DEFAULT_SSIM_FLOOR,
    ENHANCERS,
    RulePolicy,
    RuleThresholds,
    ToolCall,
    choose_tools,
    enhance,
    letterbox,
    letterbox_geometry,
    policy_scores,
    resize_to,
)
from datasetagent.tools.quality import score_array
from datasetagent.tools.ssim import ssim, to_gray
from helpers import ssim_reference


@pytest.fixture(scope="module")
def rgbs(photo_images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(img.convert("RGB")) for img in photo_images]


@pytest.fixture(scope="module")
def grays(rgbs: list[np.ndarray]) -> list[np.ndarray]:
    return [to_gray(img) for img in rgbs]


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    axes = (sigma, sigma, 0) if img.ndim == 3 else sigma
    return np.clip(gaussian_filter(img.astype(np.float64), axes) + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- ssim


def test_ssim_of_an_image_with_itself_is_one(grays: list[np.ndarray]) -> None:
    for g in grays:
        assert ssim(g, g) == pytest.approx(1.0, abs=1e-6)
        assert ssim(g, g.copy().astype(np.float32)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(427, 640), (100, 37), (11, 11), (12, 300), (7, 9)])
def test_ssim_matches_the_slow_reference(grays: list[np.ndarray], shape: tuple[int, int]) -> None:
    for g in grays:
        a = g[: shape[0], : shape[1]]
        for b in (_noisy(a, 12), _blurred(a, 1.5), _noisy(_blurred(a, 1.0), 4, seed=1)):
            assert ssim(a, b) == pytest.approx(ssim_reference(a, b), abs=1e-3)


def test_ssim_is_symmetric_and_falls_with_stronger_distortion(grays: list[np.ndarray]) -> None:
    for g in grays:
        noisy = [ssim(g, _noisy(g, s)) for s in (3, 10, 30)]
        blurred = [ssim(g, _blurred(g, s)) for s in (0.7, 1.5, 4.0)]
        assert noisy == sorted(noisy, reverse=True)
        assert blurred == sorted(blurred, reverse=True)
        assert all(0 < v < 1 for v in noisy + blurred)
        b = _noisy(g, 10)
        assert ssim(g, b) == pytest.approx(ssim(b, g), abs=1e-6)


def test_ssim_rejects_mismatched_or_colour_inputs(rgbs: list[np.ndarray]) -> None:
    g = to_gray(rgbs[0])
    with pytest.raises(ValueError, match="same shape"):
        ssim(g, g[:-1])
    with pytest.raises(ValueError, match="to_gray"):
        ssim(rgbs[0], rgbs[0])


def test_to_gray_is_itu_601_luma(rgbs: list[np.ndarray]) -> None:
    for img in rgbs:
        expected = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        g = to_gray(img)
        assert g.dtype == np.uint8
        assert g.shape == img.shape[:2]
        assert np.abs(g - expected).max() <= 1.0
        assert to_gray(g) is g


# --------------------------------------------------------------------------- policy + guard


def test_good_photos_get_no_tools(rgbs: list[np.ndarray]) -> None:
    for img in rgbs:
        assert choose_tools(policy_scores(img), "RGB") == []
        result = enhance(img, [])
        assert result.image is img
        assert result.steps == ()
        assert not result.undone
        assert result.ssim == 1.0


def test_darkened_photo_is_brightened_towards_the_original(rgbs: list[np.ndarray]) -> None:
    original = rgbs[0]
    dark = (original * 0.3).astype(np.uint8)
    scores = policy_scores(dark)
    assert scores["brightness"] < RuleThresholds().dark_brightness
    assert scores["highlights"] < RuleThresholds().dark_highlights
    calls = choose_tools(scores, "RGB")
    assert [c.name for c in calls] == ["gamma"]
    assert 0 < float(calls[0].params["gamma"]) < 1
    result = enhance(dark, calls)
    assert not result.undone
    assert result.ssim >= DEFAULT_SSIM_FLOOR
    after = score_array(result.image)["brightness"]
    assert scores["brightness"] * 1.2 < after < score_array(original)["brightness"]
    g0 = to_gray(original)
    assert ssim(g0, to_gray(result.image)) > ssim(g0, to_gray(dark)) + 0.1
    assert [s.name for s in result.steps] == ["gamma", "ssim_guard"]


def test_noisy_photo_is_denoised_first_and_noise_drops(rgbs: list[np.ndarray]) -> None:
    clean = rgbs[0]
    noisy = _noisy(clean, 15)
    scores = policy_scores(noisy)
    calls = choose_tools(scores, "RGB")
    assert calls[0].name == "denoise"
    assert "sharpen" not in [c.name for c in calls]
    result = enhance(noisy, calls)
    assert not result.undone
    assert score_array(result.image)["noise"] < scores["noise"] * 0.85
    g0 = to_gray(clean)
    assert ssim(g0, to_gray(result.image)) > ssim(g0, to_gray(noisy)) + 0.1


def test_dense_texture_is_not_noise(rgbs: list[np.ndarray]) -> None:
    """Foliage and tiles read as noisy as real noise does; only real noise also fills the
    flattest parts, so only the noised copy of the same crop is denoised."""
    texture = rgbs[0][187:, :320]  # trees and roofs at full resolution
    scores = policy_scores(texture)
    assert scores["noise"] >= RuleThresholds().noise  # the plain σ estimate cannot tell
    assert scores["flat_noise"] < RuleThresholds().flat_noise
    assert choose_tools(scores, "RGB") == []
    noised = policy_scores(_noisy(texture, 15))
    assert noised["flat_noise"] > RuleThresholds().flat_noise
    assert [c.name for c in choose_tools(noised, "RGB")] == ["denoise"]


def test_colour_cast_is_balanced(rgbs: list[np.ndarray]) -> None:
    for gains in ((1.25, 1.0, 0.75), (0.7, 1.0, 1.4)):  # tungsten-like, daylight-in-shade-like
        cast = np.clip(rgbs[0] * np.array(gains), 0, 255).astype(np.uint8)
        scores = policy_scores(cast)
        calls = choose_tools(scores, "RGB")
        assert [c.name for c in calls] == ["white_balance"]
        result = enhance(cast, calls)
        assert not result.undone
        # half-strength correction: about half the cast goes, the dominant hue stays
        after = score_array(result.image)["color_cast"]
        assert after < scores["color_cast"] * 0.6
        mean_before, mean_after = cast.reshape(-1, 3).mean(0), result.image.reshape(-1, 3).mean(0)
        assert np.argmax(mean_after) == np.argmax(mean_before)
        # a grey image of the same scene never gets a white balance
        assert choose_tools(policy_scores(to_gray(cast)), "L") == []
        # the channel means alone do not make a cast: without the edges' reading, no change
        means_only = {k: v for k, v in scores.items() if k != "edge_cast"}
        assert choose_tools(means_only, "RGB") == []


def test_a_colourful_subject_is_not_a_cast(rgbs: list[np.ndarray]) -> None:
    """A smooth orange subject filling much of a photo tilts the channel means like a cast,
    but the photo's edges around it do not lean orange: no white balance."""
    img = rgbs[0].copy()
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (0.45 * min(h, w))
    subject = r < 1
    shade = (1.0 - 0.3 * r[subject] ** 2)[:, None]  # a lit sphere, brighter in the middle
    img[subject] = (np.array([235.0, 120.0, 25.0]) * shade).astype(np.uint8)
    scores = policy_scores(img)
    assert scores["color_cast"] > RuleThresholds().color_cast  # the means do tilt
    assert scores["edge_cast"] < RuleThresholds().edge_cast
    assert choose_tools(scores, "RGB") == []


def test_blurred_photo_is_sharpened_mildly(rgbs: list[np.ndarray]) -> None:
    for img in rgbs:
        soft = _blurred(img, 1.0)
        calls = choose_tools(policy_scores(soft), "RGB")
        assert [c.name for c in calls] == ["sharpen"]
        result = enhance(soft, calls)
        assert not result.undone
        assert result.ssim > 0.95
        assert score_array(result.image)["sharpness"] > score_array(soft)["sharpness"]
        g0 = to_gray(img)
        assert ssim(g0, to_gray(result.image)) > ssim(g0, to_gray(soft))


def test_flat_photo_gets_a_capped_contrast_stretch(rgbs: list[np.ndarray]) -> None:
    flat = (rgbs[1] * 0.4 + 90).astype(np.uint8)
    scores = policy_scores(flat)
    calls = choose_tools(scores, "RGB")
    assert [c.name for c in calls] == ["auto_contrast"]
    result = enhance(flat, calls)
    after = score_array(result.image)["contrast"]
    assert scores["contrast"] * 1.3 < after <= scores["contrast"] * 1.55
    assert not result.undone


GOOD = {
    "brightness": 0.5,
    "shadows": 0.05,
    "highlights": 0.95,
    "contrast": 60.0,
    "noise": 3.0,
    "flat_noise": 1.0,
    "sharpness": 1500.0,
    "color_cast": 0.01,
    "edge_cast": 0.01,
    "entropy": 7.0,
}
DARK = {"brightness": 0.1, "highlights": 0.3}
FLAT = {"contrast": 20.0, "sharpness": 1000.0, "shadows": 0.3, "highlights": 0.6}
CAST = {"color_cast": 0.12, "edge_cast": 0.3}
NOISY = {"noise": 14.0, "flat_noise": 10.0}


@pytest.mark.parametrize(
    ("change", "mode", "expected"),
    [
        ({}, "RGB", []),
        (DARK, "RGB", ["gamma"]),
        ({"brightness": 0.1}, "RGB", []),  # a night scene: dark, but its lights reach white
        ({"brightness": 0.95, "shadows": 0.6}, "RGB", ["gamma"]),
        ({"brightness": 0.95, "shadows": 0.1}, "RGB", []),  # bright, but with real shadows
        (NOISY, "RGB", ["denoise"]),
        ({"noise": 14.0}, "RGB", []),  # texture: its flattest parts are clean
        ({**NOISY, "noise": 11.0}, "RGB", []),
        ({**NOISY, "sharpness": 10.0}, "RGB", ["denoise"]),  # never sharpen noise
        ({"sharpness": 10.0}, "RGB", ["sharpen"]),
        (CAST, "RGB", ["white_balance"]),
        (CAST, "L", []),
        ({"color_cast": 0.12}, "RGB", []),  # the means tilt but the edges do not: a subject
        ({"color_cast": 0.05, "edge_cast": 0.3}, "RGB", []),
        (FLAT, "RGB", ["auto_contrast"]),
        ({**FLAT, "shadows": 0.05, "highlights": 0.9}, "RGB", []),  # soft, but full range
        ({**FLAT, **DARK, "shadows": 0.0}, "RGB", ["gamma"]),
        ({**NOISY, **CAST, **DARK}, "RGB", ["denoise", "white_balance", "gamma"]),
        ({"contrast": 1.0, **DARK}, "RGB", []),
        ({"entropy": 0.5, **DARK}, "RGB", []),
    ],
)
def test_rule_table(change: dict[str, float], mode: str, expected: list[str]) -> None:
    calls = choose_tools({**GOOD, **change}, mode)
    assert [c.name for c in calls] == expected
    for call in calls:
        ENHANCERS.get(call.name).resolve(call.params)  # every chosen parameter is valid
        if call.name == "gamma":
            brightening = float(call.params["gamma"]) < 1
            assert brightening == ((GOOD | change)["brightness"] < 0.5)


def test_blank_images_are_left_alone() -> None:
    blank = np.full((64, 64, 3), 7, np.uint8)
    assert choose_tools(score_array(blank), "RGB") == []


def test_destructive_call_is_undone_by_the_guard(rgbs: list[np.ndarray]) -> None:
    img = rgbs[1]
    result = enhance(img, [ToolCall("sharpen", {"amount": 0.3}), ToolCall("gamma", {"gamma": 8})])
    assert result.undone
    assert result.ssim < DEFAULT_SSIM_FLOOR
    assert np.array_equal(result.image, img)
    assert len(result.steps) == 1
    guard = result.steps[0]
    assert guard.name == "ssim_guard"
    assert guard.params["undone"] is True
    assert guard.params["undid"] == "sharpen,gamma"
    assert guard.params["ssim"] == pytest.approx(result.ssim, abs=1e-4)
    # the same call passes a floor below its SSIM
    lenient = enhance(img, [ToolCall("gamma", {"gamma": 8})], ssim_floor=0.0)
    assert not lenient.undone
    assert not np.array_equal(lenient.image, img)


def test_every_step_lands_in_steps_and_geometry_runs_last(rgbs: list[np.ndarray]) -> None:
    img = rgbs[0]
    calls = [
        ToolCall("letterbox", {"width": 320, "height": 320}),
        ToolCall("white_balance"),
        ToolCall("sharpen", {"amount": "0.4"}),
    ]
    result = enhance(img, calls)
    assert [s.name for s in result.steps] == ["white_balance", "sharpen", "ssim_guard", "letterbox"]
    by_name = {s.name: s.params for s in result.steps}
    assert by_name["sharpen"] == {"amount": 0.4, "sigma": 1.0}
    assert by_name["white_balance"] == {"strength": 1.0, "max_gain": 2.0}
    assert by_name["letterbox"] == {"width": 320, "height": 320, "fill": 114}
    assert by_name["ssim_guard"]["ssim"] == pytest.approx(result.ssim, abs=1e-4)
    assert result.image.shape == (320, 320, 3)
    # undone photometric work still leaves the image fitted to the asked size
    undone = enhance(img, [ToolCall("gamma", {"gamma": 8}), ToolCall("resize", {"width": 64})])
    assert undone.undone
    assert undone.image.shape == (640, 64, 3)
    assert [s.name for s in undone.steps] == ["ssim_guard", "resize"]


# --------------------------------------------------------------------------- tools


def test_registry_lists_tools_and_checks_parameters(rgbs: list[np.ndarray]) -> None:
    expected = {"gamma", "clahe", "denoise", "sharpen", "white_balance", "auto_contrast"}
    assert expected | {"letterbox", "resize"} <= set(ENHANCERS.names())
    assert ENHANCERS.get("letterbox").geometric
    assert not ENHANCERS.get("gamma").geometric
    with pytest.raises(ConfigError, match="did you mean 'sharpen'"):
        enhance(rgbs[0], [ToolCall("sharpn")])
    with pytest.raises(ConfigError, match="its parameters are: amount, sigma"):
        enhance(rgbs[0], [ToolCall("sharpen", {"radius": 2})])
    with pytest.raises(ConfigError, match="must be an integer"):
        ENHANCERS.get("clahe").resolve({"tile_grid": 2.5})
    with pytest.raises(ConfigError, match="gamma in"):
        ENHANCERS.get("gamma")(rgbs[0], gamma=0)
    assert ENHANCERS.get("clahe").resolve({"tile_grid": "4"})["tile_grid"] == 4


def test_tools_keep_grey_images_grey(grays: list[np.ndarray]) -> None:
    g = grays[1][:120, :160]
    for name in ("gamma", "clahe", "denoise", "sharpen", "white_balance", "auto_contrast"):
        out = ENHANCERS.get(name)(g)
        assert (out.shape, out.dtype) == (g.shape, np.uint8), name
    assert np.array_equal(ENHANCERS.get("white_balance")(g), g)
    assert ENHANCERS.get("gamma")(g, gamma=0.5).mean() > g.mean() + 10
    lifted = ENHANCERS.get("clahe")(g)
    assert lifted.std() > g.std()


def test_low_light_tools_brighten_colour_photos(rgbs: list[np.ndarray]) -> None:
    dark = (rgbs[1] * 0.3).astype(np.uint8)
    for name, params in (("gamma", {"gamma": 0.6}), ("clahe", {})):
        out = ENHANCERS.get(name)(dark, **params)
        assert out.shape == dark.shape
        assert to_gray(out).mean() > to_gray(dark).mean() * 1.2, name
    for tool in ENHANCERS.names():
        assert isinstance(ENHANCERS.get(tool).description, str)
        assert ENHANCERS.get(tool).description


def test_policy_checks_mode_and_scores(rgbs: list[np.ndarray]) -> None:
    scores = policy_scores(rgbs[0])
    with pytest.raises(ConfigError, match="colour mode"):
        choose_tools(scores, "CMYK")
    with pytest.raises(ConfigError, match="noise"):
        choose_tools({k: v for k, v in scores.items() if k != "noise"}, "RGB")
    strict = RulePolicy(RuleThresholds(noise=5.0, flat_noise=0.1))
    assert [c.name for c in strict.choose(scores, "RGB")] == ["denoise"]


def test_letterbox_and_resize_fit_the_spec_size(rgbs: list[np.ndarray]) -> None:
    img = rgbs[0]  # 427 × 640
    assert resize_to(img, (200, 100)).shape == (100, 200, 3)
    boxed = letterbox(img, (320, 320), fill=0)
    scale, nw, nh, left, top = letterbox_geometry((640, 427), (320, 320))
    assert (scale, nw, nh, left) == (0.5, 320, 214, 0)
    assert top == 53
    assert boxed.shape == (320, 320, 3)
    assert not boxed[:top].any()
    assert not boxed[top + nh :].any()
    assert boxed[top : top + nh].mean() == pytest.approx(img.mean(), abs=2)
    grey = letterbox(to_gray(img), (100, 300))
    assert grey.shape == (300, 100)
    with pytest.raises(ConfigError):
        letterbox(img, (0, 10))


def test_bit_depth_normalisation_scales_instead_of_clipping() -> None:
    deep = np.array([[0, 257, 65535], [32768, 1000, 65280]], dtype=np.uint16)
    assert scale_to_8bit(deep).tolist() == [[0, 1, 255], [128, 4, 254]]
    twelve = np.array([[0, 4095, 2048]], dtype=np.uint16)  # 12-bit data in 16-bit storage
    assert scale_to_8bit(twelve).tolist() == [[0, 255, 128]]
    assert scale_to_8bit(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
    assert scale_to_8bit(np.array([[-1.0, 1.0]])).tolist() == [[0, 255]]
