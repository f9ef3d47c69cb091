"""Colour for the models: HDR video (PQ or HLG, BT.2020) tone-mapped to SDR BT.709.

The models were trained on SDR pictures (sRGB, BT.709 primaries). An HDR frame
converted naively (its PQ or HLG signal read as if it were SDR) comes out dim and
washed out. Here the frame is read as 16-bit R'G'B' in its own matrix (BT.2020), its
signal turned into light (PQ's EOTF, or HLG's inverse OETF and OOTF for a 1,000 nit
display), the gamut converted to BT.709, the luminance above a knee rolled off so that
highlights keep detail instead of clipping, and the result encoded with sRGB's
transfer function. SDR graphics carried in HDR at the reference white of BT.2408
(203 nits) come back close to their original values.
"""

from __future__ import annotations

from functools import cache

import numpy as np

REFERENCE_WHITE_NITS = 203.0  # BT.2408: SDR white, and graphics white, in HDR
HLG_PEAK_NITS = 1000.0  # the display HLG's OOTF is applied for (BT.2100's reference)
KNEE = 0.75  # below this share of SDR white, light is kept as it is; above, rolled off

# linear BT.2020 RGB -> linear BT.709 RGB (BT.2087)
BT2020_TO_BT709 = np.array([
    [1.6605, -0.5876, -0.0728],
    [-0.1246, 1.1329, -0.0083],
    [-0.0182, -0.1006, 1.1187],
], dtype=np.float32)
BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593], dtype=np.float32)
BT709_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

TRANSFERS = ("pq", "hlg")  # what `tone_map` takes (FFmpeg: smpte2084, arib-std-b67)


def pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 (PQ) EOTF: signal in [0, 1] -> display light in nits."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    e = np.power(np.clip(signal, 0, 1), 1 / m2)
    return 10000.0 * np.power(np.maximum(e - c1, 0) / (c2 - c3 * e), 1 / m1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    """The inverse of :func:`pq_to_nits` (for making test clips)."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.power(np.clip(nits / 10000.0, 0, 1), m1)
    return np.power((c1 + c2 * y) / (1 + c3 * y), m2)


def hlg_to_scene(signal: np.ndarray) -> np.ndarray:
    """BT.2100 HLG inverse OETF: signal in [0, 1] -> scene light in [0, 1]."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(signal, 0, 1)
    return np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12)


def scene_to_hlg(scene: np.ndarray) -> np.ndarray:
    """BT.2100 HLG OETF (for making test clips)."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(scene, 0, 1)
    return np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - b, 1e-12)) + c)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, np.power((v + 0.055) / 1.055, 2.4))


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055)


@cache
def _signal_lut(transfer: str) -> np.ndarray:
    """16-bit signal -> light as a share of SDR white (HLG: before its OOTF)."""
    signal = np.arange(65536, dtype=np.float64) / 65535
    if transfer == "pq":
        return (pq_to_nits(signal) / REFERENCE_WHITE_NITS).astype(np.float32)
    return hlg_to_scene(signal).astype(np.float32)


@cache
def _srgb_lut() -> np.ndarray:
    """Light in [0, 1], in 4096 steps -> 8-bit sRGB."""
    return np.round(linear_to_srgb(np.linspace(0, 1, 4096)) * 255).astype(np.uint8)


def roll_off(y: np.ndarray) -> np.ndarray:
    """Light as a share of SDR white -> [0, 1): kept below KNEE, rolled off smoothly above
    it (slope 1 at the knee, approaching 1 at any peak)."""
    over = np.maximum(y - KNEE, 0) / (1 - KNEE)
    return np.where(y <= KNEE, y, KNEE + (1 - KNEE) * (1 - np.exp(-over)))


def tone_map(rgb16: np.ndarray, transfer: str) -> np.ndarray:
    """(H, W, 3) uint16 R'G'B' (BT.2020 primaries, full range) -> (H, W, 3) uint8 sRGB."""
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {TRANSFERS}, got {transfer!r}")
    light = _signal_lut(transfer)[rgb16]  # (H, W, 3) float32
    if transfer == "hlg":  # OOTF: scene light to display light on a 1,000 nit display
        gamma = 1.2
        scene_y = light @ BT2020_LUMA
        light *= (HLG_PEAK_NITS / REFERENCE_WHITE_NITS) * np.power(
            np.maximum(scene_y, 1e-6), gamma - 1)[..., None]
    light = np.maximum(light @ BT2020_TO_BT709.T, 0)
    y = light @ BT709_LUMA
    light *= (roll_off(y) / np.maximum(y, 1e-6))[..., None]
    index = np.clip(light * 4095 + 0.5, 0, 4095).astype(np.uint16)
    return _srgb_lut()[index]
