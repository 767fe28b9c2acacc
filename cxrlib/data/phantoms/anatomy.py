"""Phantom anatomy: patient and view samplers, the drawing scene, and the normal chest.

Part of :mod:`cxrlib.data.phantoms` (see its docstring for the whole picture). Coordinates are
patient coordinates: x in about [-1, 1] left -> right on the image (patient's right is x < 0),
y in about [-1, 1] top -> bottom. The anatomy imitates a frontal chest radiograph as in NIH
ChestX-ray14 (Wang et al. 2017) and the COVID-19 image data collection (Cohen et al. 2020).
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage


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


class PatientAnatomy(TypedDict):
    """Patient-level anatomy (drawn once per patient; all of a patient's images share it).

    Lengths are in patient units: the chest spans about [-1, 1] across the image. Findings may add
    keys before drawing (``dome_shift_r``/``dome_shift_l``, ``med_shift``, ``dome_flat``,
    ``air_gain``, ``hilum_shift``, ``atel_side``, ``ptx_side``; see :mod:`.findings`).
    """

    sex: str                # "F" or "M"
    age: int                # years
    thorax_hw: float        # half-width of the inner rib margin
    body_extra: float       # soft tissue lateral to the ribs (habitus)
    soft: float             # soft-tissue attenuation factor (habitus)
    apex: float             # y of the lung apices (negative: upper image)
    dome_r: float           # y of the top of the right hemidiaphragm
    dome_gap: float         # how much lower the left dome is
    dome_h: float           # dome convexity (depth of the costophrenic angles)
    med_hw: float           # half-width of the mediastinum
    ctr: float              # cardiothoracic ratio (PA; Cardiomegaly raises it to 0.53-0.66)
    heart_shift: float      # heart offset towards the patient's left
    hila_y: float           # y of the hila
    rib_gap: float          # vertical spacing of the posterior ribs
    rib_th: float           # rib thickness
    rib_curve: float        # curvature of the posterior ribs
    spine_hw: float         # half-width of the vertebral column
    clav_y: float           # y of the clavicles
    air: float              # attenuation deficit of the aerated lung
    breast: float           # breast shadow density (0 for men)
    vessel_seed: int        # seed of the patient's vascular tree
    lesion_seed: int        # seed of the patient's lesion geometry (same lesions on follow-ups)


class ViewParams(TypedDict):
    """Image-level projection, pose and exposure (drawn per image; the domains differ in ranges)."""

    view: str               # "PA" or "AP" (AP magnifies the heart, raises the clavicles)
    inspiration: float      # diaphragm shift (negative: deeper inspiration)
    rot: float              # in-plane rotation, radians
    zoom: float             # magnification of the chest in the frame
    sx: float               # horizontal shift of the chest
    sy: float               # vertical shift of the chest
    k: float                # detector gain of the log response
    lo: float               # window: lower level
    hi: float               # window: upper level
    gamma: float            # display gamma
    noise: float            # quantum noise level
    blur: float             # detector blur (pixels at 128 px, scaled with the image size)
    border: float           # black collimation border width (fraction of the image; 0 = none)
    severity: float         # follow-up variation of lesion size/contrast
    jitter: np.ndarray      # [2] follow-up variation of lesion position


# ----------------------------------------------------------------------------- sampling
def sample_patient(rng: np.random.Generator, domain: str = "source") -> PatientAnatomy:
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


def sample_view(rng: np.random.Generator, domain: str = "source", view: str | None = None) -> ViewParams:
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
        self.conspicuity = 1.0  # lesion attenuation multiplier (see render_phantom)
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
