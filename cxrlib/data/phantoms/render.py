"""Render one phantom radiograph: anatomy + findings through a simulated detector.

Part of :mod:`cxrlib.data.phantoms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from cxrlib.data.phantoms.anatomy import _Scene, _draw_anatomy
from cxrlib.data.phantoms.findings import _DRAW, _PRE, NO_FINDING, _code, _draw_pneumonia


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
    conspicuity: float = 1.0,
) -> PhantomImage:
    """Draw one phantom radiograph and its lesion mask.

    Args:
        patient: patient-level anatomy from the patient sampler (copied, not modified).
        view: image-level projection/pose/exposure from the view sampler.
        findings: NIH finding names and/or ``COVID-19`` (empty or ``No Finding`` = normal).
        image_size: side of the square image in pixels.
        seed: seed of this image's noise and texture.
        subtype: ``bacterial`` or ``viral`` when ``Pneumonia`` is among the findings.
        conspicuity: multiplier of every lesion's attenuation (1 = the calibrated default, where
            some cases are subtle; 2-3 makes lesions obvious at 32-48 px, for quick lessons).
    """
    a = dict(patient)
    findings = [f for f in findings if f and f != NO_FINDING]
    for f in findings:  # lesion geometry is patient-level: the same stream for every image
        if f in _PRE:
            _PRE[f](a, np.random.default_rng([a["lesion_seed"], _code(f), 0]))
    rng = np.random.default_rng(seed)
    sc = _Scene(a, view, image_size, rng)
    sc.conspicuity = float(conspicuity)
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
