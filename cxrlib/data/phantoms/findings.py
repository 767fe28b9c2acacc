"""Phantom findings: the 14 NIH ChestX-ray14 findings and COVID-19, each with its appearance.

Part of :mod:`cxrlib.data.phantoms`. Each finding has an optional ``pre`` step (changes the
patient's anatomy before drawing: a big heart, a raised hemidiaphragm) and a ``draw`` step adding
attenuation to ``sc.mu`` and its support to the lesion mask ``sc.lesion``. The source-domain
``Pneumonia`` is drawn by the same code as the target classes' pneumonia (paper B's output neuron
keeping relies on that); ``COVID-19`` (bilateral peripheral lower-zone ground glass) never appears
in the source domain.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from cxrlib.data.phantoms.anatomy import _Lines, _Scene, _blob, _step
from cxrlib.data.taxonomy import NIH_FINDINGS, NO_FINDING

COVID_FINDING = "COVID-19"  # the COVID-19 image data collection's finding name
OTHER_FINDINGS: tuple[str, ...] = tuple(f for f in NIH_FINDINGS if f != "Pneumonia")


def _code(name: str) -> int:
    """Stable integer of a name (seeds per finding and per task)."""
    return zlib.crc32(name.encode("utf-8"))


# Each finding: optional `pre` (changes patient anatomy before drawing) and a `draw` function
# drawing into the scene (adds attenuation to sc.mu and its support to sc.lesion).
def _add(sc: _Scene, support: np.ndarray, density, thresh: float = 0.5) -> None:
    """Add a lesion's attenuation (times the scene's conspicuity) and its support to the mask."""
    sc.mu += density if sc.conspicuity == 1.0 else sc.conspicuity * density
    sc.lesion = np.maximum(sc.lesion, (support > thresh).astype(float))


def _in_lungs(sc: _Scene) -> np.ndarray:
    return np.clip(sc.lung_all, 0, 1)


def _sides(r: np.random.Generator, p_both: float) -> tuple[int, ...]:
    return (-1, 1) if r.random() < p_both else (int(r.choice([-1, 1])),)


def _bronchograms(sc: _Scene, r, side, region, amp):
    """Air bronchograms: dark branching tubes from the hilum, visible inside ``region``."""
    hx, hy = sc.hilum(side)
    tubes = _Lines(sc)
    theta = (0.0 if side > 0 else math.pi) + side * r.uniform(-1.0, 1.2, 5)
    tubes.rays(hx, hy, theta, r.uniform(0.3, 0.55, 5), r.uniform(0.012, 0.018, 5), 1.0, taper=0.6)
    sc.mu -= amp * 0.45 * np.clip(tubes.result(), 0, 1) * region


def _draw_ggo_covid(sc: _Scene, r, sev):
    """Bilateral, peripheral, lower-zone ground-glass opacities."""
    sup = np.zeros_like(sc.mu)
    for s in (-1, 1):
        for _ in range(int(r.integers(2, 4))):
            cx, cy = sc.point(s, r.uniform(0.6, 0.95), r.uniform(0.5, 0.92))
            rad = r.uniform(0.1, 0.18) * sev
            sup = np.maximum(sup, _blob(sc.x, sc.y, cx, cy, rad, rad * r.uniform(0.8, 1.4), edge=0.35,
                                        wobble=0.25 * sc.tex_coarse))
    sup *= _in_lungs(sc)
    amp = r.uniform(0.24, 0.4) * sev
    _add(sc, sup, amp * sup * (0.75 + 0.25 * np.clip(sc.tex_mid, -2, 2)))


def _draw_lobar(sc: _Scene, r, sev):
    """Bacterial pneumonia: lobar consolidation (sharp at a fissure) with air bronchograms."""
    s = int(r.choice([-1, 1]))
    u, v = sc.lung_uv(s)
    lobe = r.choice(["upper", "middle", "lower"] if s < 0 else ["upper", "lower"])
    if lobe == "upper":
        fis = r.uniform(0.35, 0.45)
        reg = _step((fis - v) / 0.02)
        cx, cy = sc.point(s, r.uniform(0.4, 0.7), fis * 0.6)
    elif lobe == "middle":
        reg = _step((v - 0.42) / 0.02) * _step((0.8 - v) / 0.08) * _step((0.7 - u) / 0.08)
        cx, cy = sc.point(s, 0.35, 0.62)
    else:
        reg = _step((v - r.uniform(0.45, 0.6)) / 0.08)
        cx, cy = sc.point(s, r.uniform(0.4, 0.7), 0.8)
    extent = _blob(sc.x, sc.y, cx, cy, r.uniform(0.22, 0.4) * sev, r.uniform(0.2, 0.35) * sev, edge=0.3,
                   wobble=0.2 * sc.tex_coarse)
    sup = reg * extent * np.clip(sc.lungs[s], 0, 1) * (1 - sc.heart_support)
    amp = r.uniform(0.45, 0.7) * sev
    _add(sc, sup, amp * sup * (0.85 + 0.15 * np.clip(sc.tex_mid, -2, 2)))
    _bronchograms(sc, r, s, sup, amp)


def _draw_viral(sc: _Scene, r, sev):
    """Viral pneumonia: bilateral patchy perihilar interstitial (reticulonodular) pattern."""
    sup = np.zeros_like(sc.mu)
    for s in (-1, 1):
        hx, hy = sc.hilum(s)
        R = r.uniform(0.28, 0.42) * sev
        cx = hx + s * r.uniform(0.05, 0.15)
        sup = np.maximum(sup, r.uniform(0.7, 1.0) * _blob(sc.x, sc.y, cx, hy + r.uniform(0.0, 0.15), R, R * 1.3,
                                                          edge=0.5, wobble=0.2 * sc.tex_coarse))
    sup *= _in_lungs(sc)
    patt = _step((sc.tex_fine - 0.2) / 0.6) * (0.7 + 0.3 * _step(sc.tex_mid))
    amp = r.uniform(0.26, 0.4) * sev
    _add(sc, sup, amp * sup * patt)
    sc.vessel_gain += 0.8 * sup  # peribronchial thickening


def _draw_pneumonia(sc, r, sev, subtype):
    (_draw_lobar if subtype == "bacterial" else _draw_viral)(sc, r, sev)


def _draw_infiltration(sc, r, sev):
    sup = np.zeros_like(sc.mu)
    for _ in range(int(r.integers(1, 4))):
        s = int(r.choice([-1, 1]))
        cx, cy = sc.point(s, r.uniform(0.2, 0.85), r.uniform(0.2, 0.85))
        sup = np.maximum(sup, _blob(sc.x, sc.y, cx, cy, r.uniform(0.07, 0.15) * sev, r.uniform(0.07, 0.15) * sev,
                                    edge=0.4, wobble=0.35 * sc.tex_coarse))
    sup *= _in_lungs(sc)
    _add(sc, sup, r.uniform(0.12, 0.25) * sev * sup * _step(sc.tex_mid + 0.5))


def _draw_consolidation(sc, r, sev):
    s = int(r.choice([-1, 1]))
    cx, cy = sc.point(s, r.uniform(0.3, 0.8), r.uniform(0.3, 0.85))
    sup = _blob(sc.x, sc.y, cx, cy, r.uniform(0.1, 0.18) * sev, r.uniform(0.1, 0.18) * sev, edge=0.2,
                wobble=0.2 * sc.tex_coarse) * np.clip(sc.lungs[s], 0, 1)
    amp = r.uniform(0.35, 0.55) * sev
    _add(sc, sup, amp * sup)
    _bronchograms(sc, r, s, sup, amp)


def _draw_nodule(sc, r, sev, big=False):
    for _ in range(1 if big else int(r.integers(1, 3))):
        s = int(r.choice([-1, 1]))
        cx, cy = sc.point(s, r.uniform(0.25, 0.85), r.uniform(0.15, 0.8))
        rad = (r.uniform(0.1, 0.19) if big else r.uniform(0.035, 0.06)) * math.sqrt(sev)
        sup = _blob(sc.x, sc.y, cx, cy, rad, rad * r.uniform(0.85, 1.15), edge=0.15 if big else 0.2,
                    wobble=(0.12 * sc.tex_mid) if big else None)
        amp = (r.uniform(0.25, 0.45) if big else r.uniform(0.25, 0.45)) * sev
        _add(sc, sup, amp * sup)


def _draw_atelectasis(sc, r, sev):
    s = sc.a["atel_side"]
    cx, cy = sc.point(s, r.uniform(0.3, 0.7), r.uniform(0.62, 0.82))
    ang = r.uniform(-0.3, 0.3)
    L, th = r.uniform(0.2, 0.36), r.uniform(0.014, 0.028)
    dx, dy = sc.x - cx, sc.y - cy
    along = dx * math.cos(ang) + dy * math.sin(ang)
    perp = np.abs(-dx * math.sin(ang) + dy * math.cos(ang))
    ends = _step((L / 2 - np.abs(along)) / 0.02)
    band = _step((th - perp) / 0.006) * ends * np.clip(sc.lungs[s], 0, 1)
    region = _step((th + 0.025 - perp) / 0.006) * ends * np.clip(sc.lungs[s], 0, 1)
    _add(sc, region, r.uniform(0.35, 0.5) * sev * band)


def _draw_edema(sc, r, sev):
    sup = np.zeros_like(sc.mu)
    for s in (-1, 1):
        hx, hy = sc.hilum(s)
        R = r.uniform(0.24, 0.34) * sev
        sup = np.maximum(sup, _blob(sc.x, sc.y, hx + s * 0.06, hy + 0.05, R, R * 1.25, edge=0.5))
    sup *= _in_lungs(sc)
    _add(sc, sup, r.uniform(0.14, 0.26) * sev * sup, thresh=0.45)
    # Kerley B lines: short horizontal lines at the lateral bases
    for s in (-1, 1):
        u, v = sc.lung_uv(s)
        ky = np.mod((sc.y - sc.a["apex"]) / 0.03, 1.0)
        lines = np.exp(-(((ky - 0.5) / 0.12) ** 2)) * _step((u - 0.82) / 0.02) * _step((v - 0.62) / 0.03)
        sc.mu += 0.06 * lines * np.clip(sc.lungs[s], 0, 1)
    u, v = sc.lung_uv(-1)
    sc.vessel_gain += 0.5 * _step((0.45 - v) / 0.1)  # upper-lobe diversion


def _draw_emphysema(sc, r, sev):
    lungs = _in_lungs(sc)
    for s in (-1, 1):
        u, v = sc.lung_uv(s)
        sc.vessel_gain *= np.where(s * sc.x > 0, 1.0 - 0.7 * np.clip(u, 0, 1), 1.0)  # pruning
    for _ in range(int(r.integers(0, 3))):  # bullae: lucent, thin-walled, upper zones
        s = int(r.choice([-1, 1]))
        cx, cy = sc.point(s, r.uniform(0.4, 0.85), r.uniform(0.1, 0.4))
        rad = r.uniform(0.05, 0.1)
        b = _blob(sc.x, sc.y, cx, cy, rad, rad, edge=0.05) * np.clip(sc.lungs[s], 0, 1)
        sc.mu += -0.12 * b + 0.08 * 4 * b * (1 - b)
        sc.vessel_gain *= 1 - b
    _add(sc, lungs, 0.0)


def _draw_fibrosis(sc, r, sev):
    sup = np.zeros_like(sc.mu)
    for s in _sides(r, 0.8):
        u, v = sc.lung_uv(s)
        sup = np.maximum(sup, np.clip(sc.lungs[s], 0, 1) * _step((r.uniform(0.42, 0.58) - v) / 0.1)
                         * (0.6 + 0.4 * _step((u - 0.3) / 0.2)))
    sup *= 1 - sc.heart_support
    net = np.exp(-((sc.tex_fine / 0.35) ** 2))  # zero-crossings of band-pass noise: a network
    _add(sc, sup, r.uniform(0.1, 0.2) * sev * sup * (0.3 + net), thresh=0.45)


def _draw_pleural_thickening(sc, r, sev):
    sup = np.zeros_like(sc.mu)
    for s in _sides(r, 0.3):
        u, v = sc.lung_uv(s)
        if r.random() < 0.3:  # apical cap
            reg = _step((r.uniform(0.16, 0.24) + 0.03 * sc.tex_coarse - v) / 0.02)
        else:  # lateral band over a vertical extent
            t = r.uniform(0.08, 0.15)
            v0 = r.uniform(0.2, 0.55)
            reg = _step((u - (1.0 - t) - 0.03 * sc.tex_coarse) / 0.02) * _step((v - v0) / 0.05) * _step((v0 + 0.4 - v) / 0.05)
        sup = np.maximum(sup, reg * np.clip(sc.lungs[s], 0, 1))
    _add(sc, sup, r.uniform(0.35, 0.55) * sev * sup)


def _draw_hernia(sc, r, sev):
    cx = r.uniform(0.0, 0.12)
    cy = sc.dome(1) - r.uniform(0.02, 0.1)
    rad = r.uniform(0.09, 0.14) * math.sqrt(sev)
    sup = _blob(sc.x, sc.y, cx, cy, rad * 1.15, rad, edge=0.08)
    gas = sup * _step((cy + r.uniform(-0.3, 0.3) * rad - sc.y) / 0.006)
    _add(sc, sup, 0.12 * sup - r.uniform(0.25, 0.45) * gas + 0.1 * 4 * sup * (1 - sup))


def _draw_effusion(sc, r, sev):
    sup = np.zeros_like(sc.mu)
    for s in _sides(r, 0.3):
        u, v = sc.lung_uv(s)
        vf = r.uniform(0.72, 0.92) - 0.1 * (sev - 1.0)
        meniscus = vf - r.uniform(0.12, 0.22) * np.clip(u, 0, 1.2) ** 2  # rises laterally
        sup = np.maximum(sup, _step((v - meniscus) / 0.025) * np.clip(sc.lungs[s], 0, 1))
    sup *= 1 - sc.heart_support
    fill = r.uniform(0.8, 1.0)
    _add(sc, sup, fill * sc.air * sup + 0.04 * sup)
    sc.vessel_gain *= 1 - sup


def _draw_pneumothorax(sc, r, sev):
    s = sc.a["ptx_side"]
    f = float(np.clip(r.uniform(0.72, 0.9) / sev**0.5, 0.6, 0.95))  # collapse factor
    hx, hy = sc.hilum(s)
    full = np.clip(sc.lungs[s], 0, 1) * (1 - sc.heart_support)
    xc, yc = hx + (sc.x - hx) / f, hy + (sc.y - hy) / f
    collapsed = sc.lung(s, xc, yc, edge=0.006)
    rim = full * (1 - collapsed)
    line = 4 * collapsed * (1 - collapsed) * full
    sc.vessel_gain *= 1 - rim
    _add(sc, rim, -r.uniform(0.06, 0.12) * rim + 0.05 * collapsed * full + 0.14 * line)


def _pre_cardiomegaly(a, r):
    a["ctr"] = r.uniform(0.53, 0.66)


def _pre_emphysema(a, r):
    a["dome_shift_r"] = a.get("dome_shift_r", 0.0) + r.uniform(0.05, 0.1)
    a["dome_shift_l"] = a.get("dome_shift_l", 0.0) + r.uniform(0.04, 0.08)
    a["dome_flat"] = r.uniform(0.25, 0.5)
    a["apex"] -= r.uniform(0.0, 0.03)
    a["air_gain"] = r.uniform(1.12, 1.25)
    a["ctr"] = min(a["ctr"], r.uniform(0.34, 0.4))


def _pre_atelectasis(a, r):
    s = int(r.choice([-1, 1]))
    a["atel_side"] = s
    key = "dome_shift_l" if s > 0 else "dome_shift_r"
    a[key] = a.get(key, 0.0) - r.uniform(0.04, 0.09)  # elevated hemidiaphragm
    a["med_shift"] = a.get("med_shift", 0.0) + s * r.uniform(0.01, 0.03)


def _pre_edema(a, r):
    a["ctr"] = max(a["ctr"], r.uniform(0.44, 0.5))


def _pre_fibrosis(a, r):
    a["hilum_shift"] = -r.uniform(0.02, 0.05)


def _pre_pneumothorax(a, r):
    a["ptx_side"] = int(r.choice([-1, 1]))


_PRE = {
    "Cardiomegaly": _pre_cardiomegaly, "Emphysema": _pre_emphysema, "Atelectasis": _pre_atelectasis,
    "Edema": _pre_edema, "Fibrosis": _pre_fibrosis, "Pneumothorax": _pre_pneumothorax,
}
_DRAW = {
    "Atelectasis": _draw_atelectasis,
    "Cardiomegaly": lambda sc, r, sev: _add(sc, sc.heart_support, 0.0),
    "Effusion": _draw_effusion,
    "Infiltration": _draw_infiltration,
    "Mass": lambda sc, r, sev: _draw_nodule(sc, r, sev, big=True),
    "Nodule": _draw_nodule,
    "Pneumothorax": _draw_pneumothorax,
    "Consolidation": _draw_consolidation,
    "Edema": _draw_edema,
    "Emphysema": _draw_emphysema,
    "Fibrosis": _draw_fibrosis,
    "Pleural_Thickening": _draw_pleural_thickening,
    "Hernia": _draw_hernia,
    COVID_FINDING: _draw_ggo_covid,
}
assert set(_DRAW) | {"Pneumonia"} == set(NIH_FINDINGS) | {COVID_FINDING}
