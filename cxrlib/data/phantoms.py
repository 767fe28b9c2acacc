"""Synthetic chest radiograph phantoms: the embedded default dataset of cxrlib.

No real chest X-ray can be shipped with the project, so ``make demo`` runs on phantom
radiographs that cxrlib draws itself, procedurally and deterministically (same seed ->
byte-identical files). They are written as PNG files plus a manifest in exactly the format of
the real data (:mod:`cxrlib.data.manifest`), so the same code path runs on both.

What is drawn
-------------
*Anatomy* (frontal view, patient's right on the image left): body outline and soft tissue,
neck and shoulders, two lung fields (dark) with branching vascular markings from the hila,
trachea, mediastinum with aortic knob, heart shadow shifted to the patient's left, domes of the
diaphragm (right higher) with a gastric bubble, vertebral column, clavicles, posterior and
anterior ribs, scapulae, humeral heads and breast shadows (women). Patient-level parameters
(body habitus, thorax width, heart size, rib spacing, vessel tree) are drawn once per patient,
so follow-up images of one patient share them; each image varies inspiration, pose (rotation,
shift, zoom), projection (``PA`` or ``AP``: the AP view magnifies the heart and raises the
clavicles), exposure, contrast, gamma, blur and noise.

*Findings*, each with its own radiological appearance (lesion size and contrast vary, so some
cases are subtle):

==================  ==========================================================================
Cardiomegaly        enlarged heart shadow, cardiothoracic ratio 0.53-0.66 (normal 0.38-0.45;
                    the ``ctr`` column is as projected, i.e. x1.12 in AP views)
Effusion            fluid in the costophrenic recess with a meniscus rising laterally
Pneumothorax        collapsed lung with a visible pleural line, lucent rim without markings
Nodule / Mass       small (r ~ 3-6 % of the chest) / large lobulated round opacities
Consolidation       dense segmental opacity with air bronchograms
Pneumonia           as the target-domain pneumonia (bacterial lobar or viral interstitial)
Infiltration        ill-defined hazy patches
Atelectasis         plate-like linear opacity at a base, elevated hemidiaphragm (volume loss)
Edema               bilateral perihilar "bat-wing" haze, Kerley B lines, cephalisation
Emphysema           hyperlucent enlarged lungs, low flat diaphragm, pruned vessels, bullae
Fibrosis            reticular network in the upper zones
Pleural_Thickening  smooth soft-tissue band along the lateral chest wall or an apical cap
Hernia              retrocardiac round opacity with an air-fluid level (hiatal hernia)
==================  ==========================================================================

Target-domain classes: ``covid19`` = bilateral, peripheral, lower-zone ground-glass
opacities (COVID-19 never appears in the source domain); ``pneumonia`` = bacterial lobar
consolidation with air bronchograms or viral patchy perihilar interstitial pattern (50/50,
recorded in the ``subtype`` column; ``viral_pneumonia`` of task ``paper_b_viral`` is viral
only); ``other_disease`` (paper A) = one or two of the 13 non-pneumonia NIH findings, named in
``findings``; ``normal`` = nothing. The source-domain ``Pneumonia`` finding is drawn by the
same code as the target pneumonia, so keeping its output neuron in transfer makes sense.

*Domains*: the source task (``source`` / ``nih14``) imitates NIH ChestX-ray14 (chest small
in the frame with abdomen and shoulders, moderate contrast, little noise); the target tasks
imitate the COVID collections (tighter crops, more AP views, wider spread of contrast and gamma,
more noise, some images with black collimation borders). Domain extension is a real transfer.

Ground truth and metadata
-------------------------
* ``mask_path``: 0/255 PNG, the union of the lesion regions (all zero for ``No Finding`` /
  ``normal``). Diffuse findings use their region: Cardiomegaly -> heart shadow, Emphysema ->
  both lung fields, Edema -> perihilar haze, Pneumothorax -> the air rim.
* ``patient_id``: several images per patient (``images_per_patient`` range); all images of
  one patient have the same class / findings, lesions move and change size slightly.
* ``shortcut`` / ``text_box``: a burnt-in text marker (``shortcut_text``, default
  ``PORTABLE``, rendered with PIL's default font near the top-right corner). For each image,
  with probability ``shortcut_strength`` = p the marker is drawn **iff** the image belongs to
  ``shortcut_class`` (default ``covid19``; ``Pneumonia`` in the source domain), otherwise it is
  drawn at random with probability ``shortcut_base_rate`` b. With the default b = prevalence
  pi of the shortcut class, the marker rate stays pi and the phi (Matthews) correlation
  between marker and class equals p exactly in expectation: P(marker | class) = p + (1-p) pi,
  P(marker | other) = (1-p) pi. p = 0 gives an uncorrelated marker, p = 1 a perfect shortcut.
  The decisions use their own random stream, so changing p changes nothing but the markers.
  ``text_box`` is ``x,y,w,h`` in pixels of the stored image ('' when not drawn).
* ``lr_box``: laterality markers ("R" on the image left or "L" on the image right, as
  technologists place them), drawn on ``lr_marker_rate`` of the images independent of the
  class; recorded separately from the shortcut (``x,y,w,h`` or '').
* ``ctr`` (cardiothoracic ratio as projected, i.e. including AP magnification), ``subtype``
  (``bacterial``/``viral`` for pneumonia), ``view`` (``PA``/``AP``), ``age``, ``sex``.
* ``phantoms.json`` beside the manifest records the generation parameters.

Learnability (lesion size and contrast vary, some cases are subtle; the other_disease class
mixes 13 findings) and generation speed are measured by ``benchmarks/bench_phantoms.py``.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from cxrlib.data.manifest import new_manifest, write_manifest
from cxrlib.data.taxonomy import NIH_FINDINGS, normalize_task, task_classes

PHANTOM_VERSION = 1
SHORTCUT_TEXT = "PORTABLE"
NO_FINDING = "No Finding"
COVID_FINDING = "COVID-19"  # the COVID-19 image data collection's finding name
OTHER_FINDINGS: tuple[str, ...] = tuple(f for f in NIH_FINDINGS if f != "Pneumonia")
_NAME_PREFIX = "P"  # image files are P<patient>_<k>.png


# ----------------------------------------------------------------------------- helpers
def _step(z: np.ndarray) -> np.ndarray:
    """Smooth step 0 -> 1 around z = 0 (width ~1); tanh never overflows."""
    return 0.5 * (1.0 + np.tanh(z))


def _blob(x, y, cx, cy, rx, ry, edge=0.2, wobble=None, angle=0.0):
    """Soft ellipse support in [0, 1]; ``wobble`` (array) perturbs the radius (lobulation)."""
    dx, dy = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    r = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    if wobble is not None:
        r = r + wobble
    return _step((1.0 - r) / edge)


def _norm_noise(rng, size: int, sigma: float) -> np.ndarray:
    """[size,size] smooth noise (zero mean, unit std): Gaussian-filtered white noise.

    Wide filters run on a coarser grid and are upsampled bilinearly (same look, ~10x faster).
    """
    f = max(1, int(sigma / 1.5))
    n = -(-size // f)
    g = ndimage.gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), sigma / f, mode="wrap")
    if f > 1:
        g = ndimage.zoom(g, size / n, order=1, mode="grid-wrap", grid_mode=True)[:size, :size]
    return (g - g.mean()) / (g.std() + 1e-6)


# ----------------------------------------------------------------------------- sampling
def sample_patient(rng: np.random.Generator, domain: str = "source") -> dict:
    """Draw patient-level anatomy (shared by all images of a patient).

    Args:
        rng: random generator.
        domain: ``source`` (NIH-like) or ``target`` (COVID-collection-like).
    """
    female = bool(rng.random() < 0.5)
    return dict(
        sex="F" if female else "M",
        age=int(rng.integers(18, 90)) if domain == "source" else int(rng.integers(22, 92)),
        thorax_hw=rng.uniform(0.64, 0.74) - 0.03 * female,  # inner rib margin half-width
        body_extra=rng.uniform(0.08, 0.24),  # soft tissue lateral to the ribs (habitus)
        soft=rng.uniform(0.9, 1.12),  # soft-tissue attenuation (habitus)
        apex=rng.uniform(-0.64, -0.56),
        dome_r=rng.uniform(0.28, 0.38),  # top of the right dome
        dome_gap=rng.uniform(0.02, 0.07),  # left dome lower
        dome_h=rng.uniform(0.08, 0.13),  # dome convexity (CP angle depth)
        med_hw=rng.uniform(0.1, 0.125),
        ctr=rng.uniform(0.38, 0.45),
        heart_shift=rng.uniform(-0.02, 0.03),
        hila_y=rng.uniform(-0.16, -0.08),  # level of the hila
        rib_gap=rng.uniform(0.088, 0.1),
        rib_th=rng.uniform(0.026, 0.034),
        rib_curve=rng.uniform(0.3, 0.42),
        spine_hw=rng.uniform(0.06, 0.075),
        clav_y=rng.uniform(-0.52, -0.45),
        air=rng.uniform(0.68, 0.8),  # lung air attenuation deficit
        breast=rng.uniform(0.12, 0.28) if female else 0.0,
        vessel_seed=int(rng.integers(2**31)),
        lesion_seed=int(rng.integers(2**31)),
    )


def sample_view(rng: np.random.Generator, domain: str = "source", view: str | None = None) -> dict:
    """Draw image-level projection, pose and exposure; the domains differ in their ranges.

    Args:
        rng: random generator.
        domain: ``source`` or ``target``.
        view: force ``PA`` or ``AP`` (default: drawn, 30 % AP in the source, 50 % in targets).
    """
    src = domain == "source"
    ap = bool(rng.random() < (0.3 if src else 0.5))
    if view is not None:
        if view not in ("PA", "AP"):
            raise ValueError(f"view must be 'PA' or 'AP', got {view!r}")
        ap = view == "AP"
    return dict(
        view="AP" if ap else "PA",
        inspiration=rng.uniform(-0.03, 0.03) - (0.03 if ap else 0.0),
        rot=math.radians(rng.uniform(-3, 3) if src else rng.uniform(-6, 6)),
        zoom=rng.uniform(1.02, 1.12) if src else rng.uniform(1.1, 1.28),
        sx=rng.uniform(-0.03, 0.03) if src else rng.uniform(-0.06, 0.06),
        sy=rng.uniform(-0.02, 0.04) if src else rng.uniform(-0.02, 0.08),
        k=rng.uniform(1.45, 1.8) if src else rng.uniform(1.3, 1.95),
        lo=rng.uniform(0.0, 0.08) if src else rng.uniform(0.0, 0.15),
        hi=rng.uniform(0.9, 1.0) if src else rng.uniform(0.82, 1.0),
        gamma=rng.uniform(1.1, 1.4) if src else rng.uniform(0.9, 1.5),
        noise=rng.uniform(0.008, 0.02) if src else rng.uniform(0.012, 0.035),
        blur=rng.uniform(0.3, 0.6) if src else rng.uniform(0.4, 0.8),
        border=0.0 if (src or rng.random() < 0.7) else rng.uniform(0.03, 0.08),
        severity=rng.uniform(0.8, 1.15),  # follow-up variation of lesion size/contrast
        jitter=rng.uniform(-0.02, 0.02, size=2),  # follow-up variation of lesion position
    )


# ----------------------------------------------------------------------------- scene
class _Scene:
    """One image being drawn: coordinate grids, attenuation layers and the lesion mask.

    Coordinates are patient coordinates: x in about [-1, 1] left -> right on the image
    (patient's right is x < 0), y in about [-1, 1] top -> bottom. ``side`` -1 is the patient's
    right lung (image left), +1 the patient's left lung.
    """

    def __init__(self, a: dict, v: dict, size: int, rng: np.random.Generator):
        self.a, self.v, self.S, self.rng = a, v, size, rng
        g = (np.arange(size) + 0.5) / size * 2.0 - 1.0
        yi, xi = np.meshgrid(g, g, indexing="ij")  # [S,S] image coordinates
        xi, yi = (xi - v["sx"]) / v["zoom"], (yi - v["sy"]) / v["zoom"]
        c, s = math.cos(v["rot"]), math.sin(v["rot"])
        self.x = (c * xi + s * yi).astype(np.float32)
        self.y = (-s * xi + c * yi).astype(np.float32)
        self.px = 2.0 / (size * v["zoom"])  # one pixel in patient units
        self.tex_fine = _norm_noise(rng, size, max(0.7, size / 160))
        self.tex_mid = _norm_noise(rng, size, size / 45)
        self.tex_coarse = _norm_noise(rng, size, size / 18)
        self.mu = np.zeros((size, size), np.float32)
        self.vessel_gain = np.ones((size, size), np.float32)
        self.lesion = np.zeros((size, size), np.float32)  # max of lesion supports
        self.heart_support = None

    # lung geometry --------------------------------------------------------------
    def dome(self, side: int) -> float:
        a = self.a
        d = a["dome_r"] + (a["dome_gap"] if side > 0 else 0.0) + self.v["inspiration"]
        return d + a.get("dome_shift_" + ("l" if side > 0 else "r"), 0.0)

    def lung_uv(self, side: int, x=None, y=None):
        """Lung-local coordinates: u 0 medial -> 1 lateral, v 0 apex -> 1 dome top."""
        x = self.x if x is None else x
        y = self.y if y is None else y
        a = self.a
        u = (side * x - a["med_hw"]) / (a["thorax_hw"] - a["med_hw"])
        v = (y - a["apex"]) / (self.dome(side) - a["apex"])
        return u, v

    def point(self, side: int, u: float, v: float) -> tuple[float, float]:
        a = self.a
        x = side * (a["med_hw"] + u * (a["thorax_hw"] - a["med_hw"]))
        y = a["apex"] + v * (self.dome(side) - a["apex"])
        return x + self.v["jitter"][0], y + self.v["jitter"][1]

    def lung(self, side: int, x=None, y=None, edge=0.012) -> np.ndarray:
        """Soft lung-field support of one side (before the heart is cut out)."""
        u, v = self.lung_uv(side, x, y)
        a = self.a
        span = self.dome(side) - a["apex"]
        # lateral wall: narrow rounded apex widening to the base
        lat = 0.3 + 0.7 * np.sqrt(np.clip(v / 0.45, 0, 1)) + 0.03 * np.clip(v - 0.6, 0, 1)
        top = 0.02 + 1.0 * (u - 0.42) ** 2  # rounded apex in v units
        # dome: highest at u ~ 0.4, lowest laterally (costophrenic angle) and medially
        dome_h = a["dome_h"] * a.get("dome_flat", 1.0) / span
        bottom = 1.0 + dome_h * np.where(u > 0.4, ((u - 0.4) / 0.6) ** 2, 0.35 * ((0.4 - u) / 0.4) ** 2)
        e = edge / span
        return (
            _step((v - top) / (2 * e)) * _step((bottom - v) / e)
            * _step((lat - u) / (edge * 4)) * _step((u - 0.0) / (edge * 4))
        )

    def hilum(self, side: int) -> tuple[float, float]:
        a = self.a
        return (side * (a["med_hw"] + 0.05), a["hila_y"] - 0.03 * (side > 0) + a.get("hilum_shift", 0.0))


# ----------------------------------------------------------------------------- anatomy
class _Lines:
    """Thin structures (ribs, clavicles, vessels) drawn with PIL in pixel space.

    Drawing polylines at ``ss``-fold supersampling and averaging down is ~50x faster than
    evaluating every segment on the full pixel grid.
    """

    def __init__(self, sc: "_Scene", ss: int = 2):
        self.sc, self.ss = sc, ss
        self.n = sc.S * ss
        self.im = Image.new("F", (self.n, self.n), 0.0)
        self.draw = ImageDraw.Draw(self.im)
        v = sc.v
        self._c, self._s = math.cos(v["rot"]), math.sin(v["rot"])
        self.scale = v["zoom"] * self.n / 2.0  # pixels per patient unit

    def to_px(self, x, y):
        """Patient coordinates -> supersampled pixel coordinates (inverse of the scene map)."""
        v = self.sc.v
        xi = (self._c * x - self._s * y) * v["zoom"] + v["sx"]
        yi = (self._s * x + self._c * y) * v["zoom"] + v["sy"]
        return (xi + 1.0) / 2.0 * self.n - 0.5, (yi + 1.0) / 2.0 * self.n - 0.5

    def line(self, xs, ys, width: float, value: float) -> None:
        """Polyline through patient points (arrays) with a width in patient units."""
        px, py = self.to_px(np.asarray(xs, float), np.asarray(ys, float))
        self.polyline(list(zip(px.tolist(), py.tolist())), width, value)

    def polyline(self, pts, width: float, value: float) -> None:
        """Polyline through supersampled pixel points."""
        self.draw.line(pts, fill=float(value), width=max(1, int(round(width * self.scale))))

    def rays(self, x0, y0, angle, length, width, value, pieces: int = 3, taper: float = 0.7) -> None:
        """Straight segments (arrays, one per ray) whose width and value fall off along them."""
        x0, y0, angle, length, width, value = np.broadcast_arrays(*map(np.atleast_1d, (x0, y0, angle, length, width, value)))
        t = np.linspace(0.0, 1.0, pieces + 1)  # [P+1]
        px, py = self.to_px(x0[:, None] + t * (length * np.cos(angle))[:, None],
                            y0[:, None] + t * (length * np.sin(angle))[:, None])  # [R,P+1]
        w = np.maximum(1, np.rint(width[:, None] * (1.0 - taper * t[:-1]) * self.scale)).astype(int).tolist()
        val = (value[:, None] * (1.0 - 0.5 * t[:-1])).tolist()
        px, py = px.tolist(), py.tolist()
        line = self.draw.line
        for r in range(len(px)):
            for i in range(pieces):
                line([(px[r][i], py[r][i]), (px[r][i + 1], py[r][i + 1])], fill=val[r][i], width=w[r][i])

    def result(self) -> np.ndarray:
        """[S,S] float array (supersampled image averaged down)."""
        S, ss = self.sc.S, self.ss
        return np.asarray(self.im, dtype=np.float32).reshape(S, ss, S, ss).mean(axis=(1, 3))


def _draw_anatomy(sc: _Scene) -> None:
    """Fill sc.mu with body, bones, mediastinum and lung air; set sc.lungs, sc.vessels."""
    a, v, x, y = sc.a, sc.v, sc.x, sc.y
    ax = np.abs(x)
    ap = v["view"] == "AP"
    ms = a.get("med_shift", 0.0)
    bw = a["thorax_hw"] + a["body_extra"]
    # body: torso with sloping shoulders, neck, arms beside the chest
    shoulder = -1.02 + 0.5 * np.clip((ax - 0.2) / (bw - 0.2), 0, 2) ** 2
    torso = _step((bw + 0.05 * np.clip(y + 0.5, 0, 1) - ax) / 0.02) * _step((y - shoulder) / 0.02)
    neck = _step((0.22 - ax) / 0.02)
    body = np.maximum(torso, neck)
    thick = np.sqrt(np.clip(1.0 - (x / (bw + 0.04)) ** 2, 0.02, 1.0))  # X-ray path length
    mu = a["soft"] * body * (0.15 + 0.9 * thick)
    arm = _step((ax - bw - 0.05) / 0.02) * _step((bw + 0.34 - ax) / 0.03) * _step((y - shoulder + 0.05) / 0.05)
    mu += 0.6 * arm * a["soft"]
    for s in (-1, 1):  # humeral heads and scapulae
        mu += 0.3 * _blob(x, y, s * (a["thorax_hw"] + 0.24), -0.8, 0.13, 0.14, edge=0.1)
        scap_in = a["thorax_hw"] - (0.18 if ap else 0.05)
        scap = _step((s * x - scap_in + 0.25 * (y + 0.6)) / 0.015) * _step((y + 0.78) / 0.02) * _step((-0.15 - y) / 0.05)
        mu += 0.08 * scap * _step((a["thorax_hw"] + 0.16 - s * x) / 0.02)
    if a["breast"] > 0:
        for s in (-1, 1):
            mu += a["breast"] * _blob(x, y, s * 0.42, sc.dome(s) + 0.02, 0.36, 0.28, edge=0.2)
    # mediastinum and heart as left/right contours x(y): superior mediastinum, aortic knob,
    # then the heart (1/3 right, 2/3 left of the midline) resting on the diaphragm
    ctr = a["ctr"] * (1.12 if ap else 1.0)
    width = 2.0 * ctr * a["thorax_hw"]  # projected transverse cardiac diameter
    xl_max = 2.0 / 3.0 * width + a["heart_shift"] + ms  # left border (image right)
    xr_max = 1.0 / 3.0 * width - a["heart_shift"] - ms  # right border (image left)
    mh = a["med_hw"]
    y_h0, y_bot = a["hila_y"] + 0.02, sc.dome(1) + 0.02
    xr_max = max(xr_max, mh - ms + 0.02)

    def contours(yy):  # left and right mediastinal/cardiac borders at heights yy
        t = np.clip((yy - y_h0) / (y_bot - y_h0), 0, 1)
        left = ms + mh + (xl_max - mh - ms) * (1 - (1 - t) ** 2) ** 0.6
        left = left + 0.045 * np.exp(-(((yy - a["hila_y"] + 0.15) / 0.05) ** 2))  # aortic knob
        tr = np.clip((yy - y_h0 - 0.06) / (y_bot - y_h0 - 0.02), 0, 1)
        right = ms - mh - (xr_max - mh + ms) * np.sin(np.pi * 0.85 * tr) ** 0.7  # right atrium
        return left, right

    left, right = contours(y)
    medi = _step((left - x) / 0.02) * _step((x - right) / 0.02)
    heart = medi * _step((y - y_h0 - 0.04) / 0.03) * _step((sc.dome(1) + 0.05 - y) / 0.02)
    hl, hr = contours(np.linspace(y_h0 + 0.05, y_bot, 64))
    ctr = float((hl - hr).max() / (2.0 * a["thorax_hw"]))  # as projected (AP magnified)
    sc.heart_support, sc.ctr = heart, ctr
    # lungs (air) with the heart and mediastinum cut out
    lungs = {s: sc.lung(s) for s in (-1, 1)}
    lung_all = (lungs[-1] + lungs[1]) * (1.0 - medi)
    u_any = np.where(x < 0, sc.lung_uv(-1)[0], sc.lung_uv(1)[0])
    depth = 0.8 + 0.2 * np.sin(np.pi * np.clip(u_any, 0, 1))  # thinner at the edges
    # lung behind the heart keeps a little air: the heart shadow is not uniformly white
    sc.air = a["air"] * a.get("air_gain", 1.0) * (lungs[-1] + lungs[1]) * (1.0 - 0.8 * medi) * depth
    mu += 0.1 * medi + 0.04 * heart - sc.air  # blood-filled heart and great vessels
    sc.lungs, sc.lung_all = lungs, lung_all
    # trachea to the carina, gastric bubble under the left dome
    trach = _step((0.03 - np.abs(x - 0.01 - 0.5 * ms)) / 0.006) * _step((a["hila_y"] - 0.08 - y) / 0.03)
    mu -= 0.2 * trach
    mu -= 0.3 * _blob(x, y, 0.36, sc.dome(1) + 0.13, 0.1, 0.055, edge=0.15)
    # spine: column with vertebral bodies and pedicles
    sw = a["spine_hw"]
    period = a["rib_gap"] * 0.95
    phase = (y - a["apex"]) / period
    mu += _step((sw - ax) / 0.008) * (0.2 + 0.06 * np.cos(2 * np.pi * phase))
    yy = (np.mod(phase, 1.0) - 0.5) * period
    mu += 0.1 * np.exp(-(((ax - 0.65 * sw) / 0.012) ** 2) - (yy / 0.018) ** 2)
    # ribs and clavicles as polylines: posterior ribs arch laterally, anterior ribs slope
    # down-medially and fade towards the (invisible) costal cartilage
    bones = _Lines(sc)
    u = np.linspace(0.0, 1.07, 13)
    uc = np.linspace(0.0, 1.0, 10)
    y0 = (a["apex"] - 0.07 + np.arange(11) * a["rib_gap"])[:, None]  # [11,1] rib origins
    post = y0 - 0.08 * u + a["rib_curve"] * u**2  # [11,13] posterior rib centre lines
    ant = y0 - 0.08 * 1.07 + a["rib_curve"] * 1.07**2 + 0.3 * (1.07 - u[4:])  # [11,9] anterior ribs
    th = a["rib_th"]
    for s in (-1, 1):
        xr = np.broadcast_to(s * (sw * 0.9 + u * (a["thorax_hw"] + 0.02)), post.shape)
        ppx, ppy = bones.to_px(xr, post)
        apx, apy = bones.to_px(xr[:, 4:], ant)
        for k in range(11):
            for lo, hi, f in ((0, 7, 0.9), (6, 13, 1.15)):  # ribs widen laterally
                pts = list(zip(ppx[k, lo:hi].tolist(), ppy[k, lo:hi].tolist()))
                bones.polyline(pts, 2 * th * f, 0.15)  # cortex ...
                bones.polyline(pts, 1.3 * th * f, 0.09)  # ... over a less dense medulla
            bones.polyline(list(zip(apx[k].tolist(), apy[k].tolist())), 1.6 * th, 0.07)
        cy = a["clav_y"] - (0.06 if ap else 0.0) + (0.07 - 0.22 * uc) * (0.5 if ap else 1.0) + 0.04 * np.sin(2 * np.pi * uc)
        bones.line(s * (0.06 + uc * (a["thorax_hw"] + 0.14)), cy, 0.06, 0.28)
    mu += bones.result() * np.maximum(body, 0.3)
    sc.mu = mu
    # vascular tree from the hila (patient-level geometry), added later inside the lungs
    vr = np.random.default_rng(a["vessel_seed"])
    vessels = _Lines(sc)
    for s in (-1, 1):
        hx, hy = sc.hilum(s)
        ang = np.linspace(-1.25, 1.3, 10) + vr.uniform(-0.12, 0.12, 10)
        theta = ang if s > 0 else math.pi - ang  # fan out laterally
        L = vr.uniform(0.35, 0.6, 10)
        vessels.rays(hx, hy, theta, L, vr.uniform(0.014, 0.02, 10), 1.0)
        # two branches per vessel
        t = vr.uniform(0.3, 0.65, (2, 10))
        turn = np.where(vr.random((2, 10)) < 0.5, -1.0, 1.0) * vr.uniform(0.3, 0.7, (2, 10))
        vessels.rays((hx + t * L * np.cos(theta)).ravel(), (hy + t * L * np.sin(theta)).ravel(), (theta + turn).ravel(),
                     (L * vr.uniform(0.35, 0.6, (2, 10))).ravel(), vr.uniform(0.009, 0.013, 20), 0.8, pieces=2)
    sc.vessels = vessels.result()
    sc.vessels += sum(0.8 * _blob(x, y, *sc.hilum(s), 0.05, 0.07, edge=0.4) for s in (-1, 1))
    sc.parenchyma = 0.02 * sc.tex_mid


# ----------------------------------------------------------------------------- findings
# Each finding: optional `pre` (changes patient anatomy before drawing) and a `draw` function
# drawing into the scene (adds attenuation to sc.mu and its support to sc.lesion).
def _add(sc: _Scene, support: np.ndarray, density, thresh: float = 0.5) -> None:
    sc.mu += density
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


# ----------------------------------------------------------------------------- rendering
@dataclass
class PhantomImage:
    """One rendered phantom: 8-bit image, boolean lesion mask and what was drawn."""

    image: np.ndarray  # [S,S] uint8
    mask: np.ndarray  # [S,S] bool, union of the lesion regions
    lung_mask: np.ndarray  # [S,S] bool, visible lung fields (heart and mediastinum cut out)
    view: str
    ctr: float  # cardiothoracic ratio as projected


def render_phantom(
    patient: Mapping,
    view: Mapping,
    findings: Sequence[str],
    image_size: int = 128,
    seed: int = 0,
    subtype: str = "",
) -> PhantomImage:
    """Draw one phantom radiograph and its lesion mask.

    Args:
        patient: patient-level anatomy from the patient sampler (copied, not modified).
        view: image-level projection/pose/exposure from the view sampler.
        findings: NIH finding names and/or ``COVID-19`` (empty or ``No Finding`` = normal).
        image_size: side of the square image in pixels.
        seed: seed of this image's noise and texture.
        subtype: ``bacterial`` or ``viral`` when ``Pneumonia`` is among the findings.
    """
    a = dict(patient)
    findings = [f for f in findings if f and f != NO_FINDING]
    for f in findings:  # lesion geometry is patient-level: the same stream for every image
        if f in _PRE:
            _PRE[f](a, np.random.default_rng([a["lesion_seed"], _code(f), 0]))
    rng = np.random.default_rng(seed)
    sc = _Scene(a, view, image_size, rng)
    _draw_anatomy(sc)
    sev = view["severity"]
    for f in findings:
        r = np.random.default_rng([a["lesion_seed"], _code(f), 1])
        if f == "Pneumonia":
            _draw_pneumonia(sc, r, sev, subtype or "bacterial")
        elif f in _DRAW:
            _DRAW[f](sc, r, sev)
        else:
            raise ValueError(f"no phantom appearance for finding {f!r}")
    lungs = np.clip(sc.lung_all, 0, 1)
    sc.mu += (0.09 * np.clip(sc.vessels, 0, 1.5) * sc.vessel_gain + sc.parenchyma) * lungs
    # detector: transmitted-intensity log response, window, gamma, blur, noise
    v = view
    img = 1.0 - np.exp(-v["k"] * np.clip(sc.mu, 0, None))
    img = np.clip((img - v["lo"]) / (v["hi"] - v["lo"]), 0, 1) ** v["gamma"]
    img = ndimage.gaussian_filter(img, v["blur"] * image_size / 128)
    img = img + v["noise"] * np.sqrt(img + 0.05) * rng.standard_normal(img.shape, dtype=np.float32)
    if v["border"] > 0:  # collimation / black border of a re-cropped image
        b = int(round(v["border"] * image_size))
        img[:, :b] = 0
        img[:, image_size - b:] = 0
    image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    mask = sc.lesion > 0.5
    return PhantomImage(image=image, mask=mask, lung_mask=sc.lung_all > 0.5, view=v["view"], ctr=float(sc.ctr))


def _code(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


# ----------------------------------------------------------------------------- markers
@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(4, size))
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=64)
def _fit_font(text: str, image_size: int) -> tuple[ImageFont.ImageFont, tuple[int, int, int, int]]:
    """Font (size 14 % of the image, shrunk to fit 70 % of its width) and text bbox."""
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    size = max(8, round(image_size * 0.14))
    while True:
        font = _font(size)
        bbox = draw.textbbox((0, 0), text, font=font)
        if bbox[2] - bbox[0] <= 0.7 * image_size or size <= 4 or not isinstance(font, ImageFont.FreeTypeFont):
            return font, bbox
        size -= 1


def draw_text_marker(image: np.ndarray, text: str, corner: str, rng: np.random.Generator,
                     value: int = 245) -> tuple[int, int, int, int]:
    """Burn ``text`` into ``image`` (in place) near a corner; return its box (x, y, w, h).

    Args:
        image: [S,S] uint8 image, modified in place.
        text: the letters to draw.
        corner: ``top-right``, ``top-left`` (or ``left``/``right`` mid-upper border, used for
            laterality markers).
        rng: random stream for the position jitter.
        value: gray value of the letters.
    """
    S = image.shape[0]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    draw.fontmode = "1"  # crisp, not anti-aliased: burnt-in annotation pixels
    font, (l, t, r, b) = _fit_font(text, S)
    w, h = r - l, b - t
    m = max(2, S // 40)
    jx, jy = int(rng.integers(0, m + 1)), int(rng.integers(0, m + 1))
    if corner == "top-right":
        x0, y0 = S - w - m - jx, m + jy
    elif corner == "top-left":
        x0, y0 = m + jx, m + jy
    elif corner in ("left", "right"):
        yy = int(S * 0.16) + jy
        x0, y0 = (m + jx, yy) if corner == "left" else (S - w - m - jx, yy)
    else:
        raise ValueError(f"unknown corner {corner!r}")
    x0, y0 = max(0, x0), max(0, y0)
    draw.text((x0 - l, y0 - t), text, fill=int(value), font=font)
    image[...] = np.asarray(pil)
    return int(x0), int(y0), int(min(w, S - x0)), int(min(h, S - y0))  # clipped to the image


# ----------------------------------------------------------------------------- dataset
def _domain(task: str) -> str:
    return "source" if task == "nih14" else "target"


def _plan_patients(rng, n, classes, ipp, fractions):
    """Assign image counts to patients and patients to classes (balanced by image count)."""
    lo, hi = ipp
    target = np.array([fractions.get(c, 0.0) for c in classes], dtype=float)
    target = target / target.sum()
    counts = np.zeros(len(classes))
    plan, total = [], 0
    while total < n:
        k = int(min(rng.integers(lo, hi + 1), n - total))
        deficit = target * (total + k) - counts
        order = rng.permutation(len(classes))
        c = int(order[np.argmax(deficit[order])])
        plan.append((c, k))
        counts[c] += k
        total += k
    return plan


def _pick_findings(rng, pool, k, used, weight=1):
    """k distinct findings from ``pool``, favouring rarely used ones (balanced prevalence).

    ``used`` counts images per finding so far; ``weight`` is this patient's image count.
    """
    chosen = []
    for _ in range(k):
        cand = [f for f in pool if f not in chosen]
        w = np.array([1.0 / (1.0 + used.get(f, 0)) ** 3 for f in cand])
        f = cand[int(rng.choice(len(cand), p=w / w.sum()))]
        chosen.append(f)
    for f in chosen:
        used[f] = used.get(f, 0) + weight
    return sorted(chosen, key=NIH_FINDINGS.index)


def _validate_args(task, n, image_size, shortcut_strength, ipp, shortcut_base_rate, classes, shortcut_class):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    if not 0.0 <= float(shortcut_strength) <= 1.0:
        raise ValueError(f"shortcut_strength must be in [0, 1], got {shortcut_strength!r}")
    if shortcut_base_rate is not None and not 0.0 <= float(shortcut_base_rate) <= 1.0:
        raise ValueError(f"shortcut_base_rate must be in [0, 1], got {shortcut_base_rate!r}")
    if len(ipp) != 2 or int(ipp[0]) < 1 or int(ipp[1]) < int(ipp[0]):
        raise ValueError(f"images_per_patient must be (min, max) with 1 <= min <= max, got {ipp!r}")
    if shortcut_class not in classes:
        raise ValueError(f"shortcut_class {shortcut_class!r} is not a class of task {task!r}: {list(classes)}")


def generate_phantoms(
    out_dir: str | os.PathLike,
    task: str,
    n: int,
    seed: int = 0,
    image_size: int = 128,
    shortcut_strength: float = 0.0,
    images_per_patient: tuple[int, int] = (1, 3),
    shortcut_class: str | None = None,
    shortcut_base_rate: float | None = None,
    shortcut_text: str = SHORTCUT_TEXT,
    lr_marker_rate: float = 0.6,
    class_fractions: Mapping[str, float] | None = None,
) -> Path:
    """Generate a phantom chest X-ray dataset: PNG images, lesion masks and a manifest.

    Writes ``out_dir/images/P<patient>_<k>.png`` (8-bit gray), ``out_dir/masks/...png``
    (0/255), ``out_dir/manifest.csv`` and ``out_dir/phantoms.json``. Deterministic: the same
    arguments give byte-identical files. See the module docstring for what is drawn and for
    the exact shortcut rule.

    Args:
        out_dir: output folder (the data root of the manifest's paths).
        task: ``source`` (= ``nih14``, multi-label NIH findings), ``paper_a``, ``paper_b`` or
            ``paper_b_viral`` (``-`` and ``_`` both accepted).
        n: number of images.
        seed: random seed.
        image_size: side of the square images in pixels.
        shortcut_strength: p in [0, 1], the phi correlation between the text marker and
            ``shortcut_class`` (0 = uncorrelated marker).
        images_per_patient: (min, max) images per patient, inclusive.
        shortcut_class: class tied to the marker; default ``covid19`` (targets) or the finding
            ``Pneumonia`` (source).
        shortcut_base_rate: marker probability when the image is not tied (default: the
            prevalence of ``shortcut_class``, which makes the phi correlation equal p).
        shortcut_text: the marker's letters.
        lr_marker_rate: fraction of images with an (uncorrelated) "L"/"R" laterality marker.
        class_fractions: wanted fraction of images per class (target tasks; default equal);
            in the source task the fraction of ``No Finding`` images is 0.25.

    Returns:
        Path of the written manifest.csv.
    """
    canon = normalize_task(task)
    domain = _domain(canon)
    multi = canon == "nih14"
    classes = task_classes(canon)
    if shortcut_class is None:
        shortcut_class = "Pneumonia" if multi else "covid19"
    _validate_args(task, n, image_size, shortcut_strength, tuple(images_per_patient), shortcut_base_rate,
                   NIH_FINDINGS if multi else classes, shortcut_class)
    if class_fractions is not None:
        unknown = set(class_fractions) - set(classes)
        if unknown or multi:
            raise ValueError(f"class_fractions: unknown classes {sorted(unknown)} for task {task!r}" if unknown
                             else "class_fractions applies to the single-label target tasks only")
        if any(float(f) < 0 for f in class_fractions.values()) or sum(map(float, class_fractions.values())) <= 0:
            raise ValueError(f"class_fractions must be >= 0 with a positive sum, got {dict(class_fractions)}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)

    tcode = _code(canon)
    plan_rng = np.random.default_rng([seed, tcode, 0])
    if multi:
        plan = _plan_patients(plan_rng, n, ("none", "finding"), images_per_patient, {"none": 0.25, "finding": 0.75})
    else:
        fr = dict(class_fractions) if class_fractions else {c: 1.0 for c in classes}
        plan = _plan_patients(plan_rng, n, classes, images_per_patient, fr)

    # patient-level content: findings / class, anatomy
    used: dict[str, int] = {}
    patients = []
    for pi, (c, k) in enumerate(plan):
        prng = np.random.default_rng([seed, tcode, 1, pi])
        anat = sample_patient(prng, domain)
        subtype = ""
        if multi:
            findings = [] if c == 0 else _pick_findings(plan_rng, NIH_FINDINGS, int(plan_rng.choice([1, 1, 1, 2, 2, 3])), used, k)
            label = ""
        else:
            label = classes[c]
            if label == "normal":
                findings = []
            elif label == "covid19":
                findings = [COVID_FINDING]
            elif label in ("pneumonia", "viral_pneumonia"):
                findings = ["Pneumonia"]
            else:  # other_disease
                findings = _pick_findings(plan_rng, OTHER_FINDINGS, int(plan_rng.choice([1, 1, 2])), used, k)
        if "Pneumonia" in findings:
            subtype = "viral" if (label == "viral_pneumonia" or prng.random() < 0.5) else "bacterial"
        patients.append(dict(pid=f"{_NAME_PREFIX}{pi:05d}", k=k, findings=findings, label=label,
                             anat=anat, subtype=subtype))

    def tied(p):  # is the image in the shortcut class?
        return (shortcut_class in p["findings"]) if multi else (p["label"] == shortcut_class)

    prevalence = sum(p["k"] for p in patients if tied(p)) / n
    base = prevalence if shortcut_base_rate is None else float(shortcut_base_rate)

    rows, idx, written = [], 0, set()
    for p in patients:
        for j in range(p["k"]):
            irng = np.random.default_rng([seed, tcode, 2, idx])
            view = sample_view(irng, domain)
            ph = render_phantom(p["anat"], view, p["findings"], image_size, seed=int(irng.integers(2**31)),
                                subtype=p["subtype"])
            # shortcut and laterality markers: their own stream (p changes nothing else)
            mrng = np.random.default_rng([seed, tcode, 3, idx])
            u_tie, u_base, u_lr = mrng.random(3)
            draw = tied(p) if u_tie < shortcut_strength else bool(u_base < base)
            lr_box = text_box = ""
            image = ph.image
            if u_lr < lr_marker_rate:
                right = mrng.random() < 0.5
                bx = draw_text_marker(image, "R" if right else "L", "left" if right else "right", mrng, value=235)
                lr_box = ",".join(map(str, bx))
            if draw:
                bx = draw_text_marker(image, shortcut_text, "top-right", mrng)
                text_box = ",".join(map(str, bx))
            name = f"{p['pid']}_{j:02d}.png"
            _save_png(image, out_dir / "images" / name)
            _save_png(ph.mask.astype(np.uint8) * 255, out_dir / "masks" / name)
            written.add(name)
            rows.append(dict(
                path=f"images/{name}", patient_id=p["pid"], source=f"phantom-{canon}", view=ph.view,
                findings="|".join(p["findings"]) or NO_FINDING, label=p["label"], mask_path=f"masks/{name}",
                shortcut="1" if draw else "0", text_box=text_box, age=str(p["anat"]["age"] + j // 2),
                sex=p["anat"]["sex"], lr_box=lr_box, ctr=f"{ph.ctr:.3f}", subtype=p["subtype"],
            ))
            idx += 1
    _remove_stale(out_dir, written)
    manifest = write_manifest(new_manifest(rows), out_dir / "manifest.csv")
    meta = dict(version=PHANTOM_VERSION, task=canon, n=n, seed=seed, image_size=image_size,
                shortcut_strength=shortcut_strength, shortcut_class=shortcut_class, shortcut_base_rate=base,
                shortcut_text=shortcut_text, lr_marker_rate=lr_marker_rate,
                images_per_patient=list(images_per_patient), patients=len(patients),
                class_fractions=dict(class_fractions) if class_fractions else None)
    tmp = out_dir / "phantoms.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "phantoms.json")
    return manifest


def _save_png(arr: np.ndarray, path: Path) -> None:
    """Atomic PNG write (a crash never leaves a truncated image)."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr, mode="L").save(tmp, format="PNG", compress_level=4)
    os.replace(tmp, path)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete phantom PNGs of an earlier, larger run in the same folder (only ours)."""
    if not (out_dir / "phantoms.json").is_file():
        return
    for sub in ("images", "masks"):
        for f in (out_dir / sub).glob(f"{_NAME_PREFIX}[0-9]*_[0-9]*.png"):
            if f.name not in keep:
                f.unlink()


def contact_sheet(manifest_path: str | os.PathLike, out_png: str | os.PathLike, per_group: int = 4,
                  group_col: str = "label", show_masks: bool = True) -> Path:
    """Save a grid of example images (one row per class or finding) with mask outlines.

    Args:
        manifest_path: a phantom (or any) manifest with ``mask_path``.
        out_png: output PNG.
        per_group: images per row.
        group_col: ``label`` (targets) or ``findings`` (source).
        show_masks: outline the lesion mask in the right half of each tile pair.
    """
    from cxrlib.data.manifest import read_manifest

    df = read_manifest(manifest_path)
    root = Path(manifest_path).parent
    rows = []
    for _, g in df.groupby(group_col, sort=True):
        tiles = []
        for _, r in g.head(per_group).iterrows():
            im = np.asarray(Image.open(root / r["path"]).convert("L"))
            tile = np.stack([im] * 3, -1)
            if show_masks and r.get("mask_path"):
                m = np.asarray(Image.open(root / r["mask_path"])) > 0
                edge = m & ~ndimage.binary_erosion(m)
                tile = tile.copy()
                tile[edge] = (255, 40, 40)
            tiles.append(tile)
        while len(tiles) < per_group:
            tiles.append(np.zeros_like(tiles[0]))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    Image.fromarray(sheet.astype(np.uint8)).save(out_png)
    return Path(out_png)
