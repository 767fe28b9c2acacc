"""Burnt-in text markers on phantoms: the class-correlated shortcut and laterality letters.

Part of :mod:`cxrlib.data.phantoms`. Real COVID-19 collections carry burnt-in words
("PORTABLE", hospital names, arrows) whose presence correlates with the source collection and so
with the class (DeGrave et al. 2021, "AI for radiographic COVID-19 detection selects shortcuts over
signal"); the phantoms reproduce this at a chosen strength to teach and measure shortcut learning.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHORTCUT_TEXT = "PORTABLE"


# ----------------------------------------------------------------------------- markers
@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(4, size))
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# Text widths as a fraction of the image side. The shortcut label is kept to at most 55 % so
# that its left-right mirror (the masking ablation's control region,
# cxrlib.explain.ablation.control_masks) overlaps it by less than half: the control is then the
# same box on the other shoulder, not a box in the lungs.
MAX_TEXT_WIDTH = 0.55
PLATE_VALUE = 12  # gray of the dark label plate behind the shortcut text
PLATE_PAD = (1 / 48, 4 / 48)  # plate margin around the letters (x, y), fraction of the side (>= 1 px)
TEXT_VALUE = 255  # gray of the shortcut text's letters
# Corner of the shortcut label. Measured on the quick demo (paper_b.yaml, 2 data seeds, Grad-CAM
# on 16 test images with the label): top right, the model trained where it marks COVID-19 put
# 2.2-2.9x the area's share of its Grad-CAM on it (the clean model 0.6-2.1x: a clean model's
# Grad-CAM often rests on the upper chest); bottom right, below the lungs, only 1.5-1.7x (clean
# 0.5-0.9x) although masking it flipped as many predictions: Grad-CAM misses it there.
TEXT_CORNER = "top-right"


@lru_cache(maxsize=64)
def _fit_font(text: str, image_size: int,
              max_width: float = MAX_TEXT_WIDTH) -> tuple[ImageFont.ImageFont, tuple[int, int, int, int]]:
    """Font (size 14 % of the image, shrunk to fit ``max_width`` of its width) and text bbox."""
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    size = max(8, round(image_size * 0.14))
    while True:
        font = _font(size)
        bbox = draw.textbbox((0, 0), text, font=font)
        if bbox[2] - bbox[0] <= max_width * image_size or size <= 4 or not isinstance(font, ImageFont.FreeTypeFont):
            return font, bbox
        size -= 1


def draw_text_marker(image: np.ndarray, text: str, corner: str, rng: np.random.Generator,
                     value: int = TEXT_VALUE, plate: int | None = None) -> tuple[int, int, int, int]:
    """Burn ``text`` into ``image`` (in place) near a corner; return its box (x, y, w, h).

    Args:
        image: [S,S] uint8 image, modified in place.
        text: the letters to draw.
        corner: ``top-right``, ``top-left``, ``bottom-right``, ``bottom-left`` (or
            ``left``/``right`` mid-upper border, used for laterality markers).
        rng: random stream for the position jitter.
        value: gray value of the letters.
        plate: gray value of a label plate drawn behind the letters (a rectangle
            :data:`PLATE_PAD` larger than the text on each side, as the white-on-black labels
            of portable radiographs), in the very corner (1 px margin per 48 px), or None
            for letters straight on the image. The returned box is the
            plate's when there is one: masking the box removes the whole marker.
    """
    S = image.shape[0]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    draw.fontmode = "1"  # crisp, not anti-aliased: burnt-in annotation pixels
    font, (l, t, r, b) = _fit_font(text, S)
    px, py = (0, 0) if plate is None else (max(1, round(PLATE_PAD[0] * S)), max(1, round(PLATE_PAD[1] * S)))
    w, h = r - l + 2 * px, b - t + 2 * py  # the marker's box (plate included)
    m = max(2, S // 40) if plate is None else max(1, S // 48)  # a plate sits in the very corner
    jx, jy = int(rng.integers(0, m + 1)), int(rng.integers(0, m + 1))
    if corner == "top-right":
        x0, y0 = S - w - m - jx, m + jy
    elif corner == "top-left":
        x0, y0 = m + jx, m + jy
    elif corner == "bottom-right":
        x0, y0 = S - w - m - jx, S - h - m - jy
    elif corner == "bottom-left":
        x0, y0 = m + jx, S - h - m - jy
    elif corner in ("left", "right"):
        yy = int(S * 0.16) + jy
        x0, y0 = (m + jx, yy) if corner == "left" else (S - w - m - jx, yy)
    else:
        raise ValueError(f"unknown corner {corner!r}")
    x0, y0 = max(0, x0), max(0, y0)
    if plate is not None:
        draw.rectangle((x0, y0, min(S, x0 + w) - 1, min(S, y0 + h) - 1), fill=int(plate))
    draw.text((x0 + px - l, y0 + py - t), text, fill=int(value), font=font)
    image[...] = np.asarray(pil)
    return int(x0), int(y0), int(min(w, S - x0)), int(min(h, S - y0))  # clipped to the image


def burn_markers(image: np.ndarray, tied: bool, rng: np.random.Generator, shortcut_strength: float,
                 base_rate: float, lr_marker_rate: float, text: str = SHORTCUT_TEXT) -> tuple[bool, str, str]:
    """Burn the laterality letter and the shortcut text into ``image`` (in place) by the shortcut rule.

    With probability ``shortcut_strength`` = p the text is drawn **iff** ``tied`` (the image is in
    the shortcut class), otherwise with probability ``base_rate`` b; with b = the prevalence pi of
    the shortcut class, the phi correlation between text and class is p in expectation.

    Args:
        image: [S,S] uint8 image, modified in place.
        tied: whether the image belongs to the shortcut class.
        rng: the image's own marker stream (so p changes nothing but the markers).
        shortcut_strength: p in [0, 1].
        base_rate: b in [0, 1].
        lr_marker_rate: probability of an (uncorrelated) "L"/"R" laterality letter.
        text: the shortcut's letters.

    Returns:
        (text drawn, text box ``x,y,w,h`` or '', laterality box ``x,y,w,h`` or '').
    """
    u_tie, u_base, u_lr = rng.random(3)
    draw = tied if u_tie < shortcut_strength else bool(u_base < base_rate)
    lr_box = text_box = ""
    if u_lr < lr_marker_rate:
        right = rng.random() < 0.5
        bx = draw_text_marker(image, "R" if right else "L", "left" if right else "right", rng, value=235)
        lr_box = ",".join(map(str, bx))
    if draw:
        bx = draw_text_marker(image, text, TEXT_CORNER, rng, plate=PLATE_VALUE)
        text_box = ",".join(map(str, bx))
    return bool(draw), text_box, lr_box
