"""Augmentations on member crops (RGB uint8, HxWx3, the classifier's input size).

Two kinds:
- `photometric`: label-preserving changes every crop may get (colour, blur, noise, JPEG, flip).
- `synthesize(kind, ...)`: turns a LIVE crop into a print-, screen- or mask-like attack. The corpus is
  ~95% replay attacks, so without these the heads learn "replay vs live" and forget print/mask.

The crop is centred on the face; `face_frac` is the face width as a fraction of the crop width
(1/2.7 for MiniFASNetV2, 1/4 for MiniFASNetV1SE, 1/1.5 for faceantispoof_minifas). `bg` is another
crop standing in for the attacker's surroundings (what is seen around a phone or a sheet of paper).
Every function takes a numpy Generator, so a sample's augmentation is fixed by its seed.
"""
from __future__ import annotations

import cv2
import numpy as np

SYNTHETIC_KINDS = ("synthetic_print", "synthetic_replay", "synthetic_mask")


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1] if ok else img


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma)) if sigma > 0.05 else img


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Colour jitter, blur, noise, JPEG re-compression and horizontal flip."""
    x = img.astype(np.float32)
    s = strength
    # brightness, contrast, saturation and a white-balance gain per channel
    x = x * rng.uniform(1 - 0.25 * s, 1 + 0.25 * s)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - 0.25 * s, 1 + 0.25 * s) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - 0.3 * s, 1 + 0.3 * s)
    x = x * rng.uniform(1 - 0.06 * s, 1 + 0.06 * s, size=3)
    out = _u8(x)
    if rng.random() < 0.3:
        out = _blur(out, rng.uniform(0.3, 1.2 * s))
    if rng.random() < 0.3:
        out = _u8(out + rng.normal(0, rng.uniform(1, 6 * s), out.shape))
    if rng.random() < 0.4:
        out = _jpeg(out, rng.integers(40, 96))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# ---- building blocks of the synthetic attacks -------------------------------------------------


def _quad(size: int, rng: np.random.Generator, half_extent: float) -> np.ndarray:
    """A randomly tilted quadrilateral (4x2, clockwise from top-left) around the crop centre,
    reaching `half_extent` * size from the centre on average."""
    c = size / 2
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32)
    aspect = rng.uniform(0.75, 1.35)
    pts = corners * np.array([half_extent * size, half_extent * size * aspect])
    pts += rng.normal(0, 0.06 * size, pts.shape)  # perspective: corners move independently
    angle = np.deg2rad(rng.uniform(-12, 12))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (pts @ rot.T + c + rng.normal(0, 0.04 * size, 2)).astype(np.float32)


def _surroundings(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scene behind the attack instrument: a corner of another crop (mostly background, not
    its face), enlarged, flipped and blurred, mixed with a smooth colour gradient."""
    size = bg.shape[0]
    q = size // 2
    y, x = rng.integers(0, 2, 2) * q
    patch = cv2.resize(bg[y:y + q, x:x + q], (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    out = _blur(patch, rng.uniform(0.5, 2.5)).astype(np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    ramp = ramp[None, :] if rng.random() < 0.5 else ramp[:, None]
    c0, c1 = rng.uniform(20, 230, 3), rng.uniform(20, 230, 3)
    gradient = c0 + (c1 - c0) * ramp[:, :, None]
    a = rng.uniform(0, 0.7)
    return (out * (1 - a) + gradient * a) * rng.uniform(0.6, 1.2)


def _tilt(content: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild perspective distortion (a tilted instrument) that keeps the face scale near 1."""
    size = content.shape[0]
    src = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    dst = src + rng.normal(0, 0.05 * size, src.shape).astype(np.float32)
    h = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(content, h, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)


def _poly_mask(size: int, quad: np.ndarray) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(m, np.rint(quad * 16).astype(np.int32), 1.0, cv2.LINE_AA, shift=4)
    return m


def _frame(size: int, quad: np.ndarray, width: float) -> np.ndarray:
    """Mask (0..1) of a band of `width` pixels just outside the quad: a bezel or a paper margin."""
    c = quad.mean(axis=0)
    grown = c + (quad - c) * (1 + width / max(np.linalg.norm(quad - c, axis=1).mean(), 1))
    return np.clip(_poly_mask(size, grown) - _poly_mask(size, quad), 0, 1)


def _fingers(img: np.ndarray, quad: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three skin-coloured finger tips over an edge of the quad."""
    size = img.shape[0]
    out = img.copy()
    edge = rng.integers(4)
    a, b = quad[edge], quad[(edge + 1) % 4]
    skin = np.array([rng.uniform(170, 240), rng.uniform(120, 180), rng.uniform(90, 150)], np.float32)
    for _ in range(rng.integers(1, 4)):
        p = a + (b - a) * rng.uniform(0.15, 0.85)
        axes = (max(2, int(size * rng.uniform(0.05, 0.09))), max(3, int(size * rng.uniform(0.1, 0.2))))
        angle = np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])) + 90
        m = np.zeros((size, size), np.float32)
        cv2.ellipse(m, (int(p[0]), int(p[1])), axes, angle, 0, 360, 1.0, -1, cv2.LINE_AA)
        m = _blur(m, 0.8)[:, :, None]
        shade = rng.uniform(0.75, 1.05)
        out = out * (1 - m) + skin * shade * m
    return out


def _halftone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Printer dot screen: per channel, a rotated sinusoidal dot pattern modulating the ink."""
    size = x.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(1.6, 3.5)
    out = np.empty_like(x)
    for ch, angle in enumerate(np.deg2rad([15, 75, 0]) + rng.uniform(0, np.pi / 2)):
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        dots = (np.cos(2 * np.pi * u / period) * np.cos(2 * np.pi * v / period) + 1) / 2
        ink = 1 - x[:, :, ch] / 255
        amount = rng.uniform(0.15, 0.45)
        out[:, :, ch] = 255 * (1 - np.clip(ink + amount * (dots - 0.5) * ink * 2, 0, 1))
    return out


def _moire(size: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative screen interference: two close gratings beating at a random angle."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.ones((size, size, 1), np.float32)
    for _ in range(rng.integers(1, 3)):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(2.0, 9.0)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        out *= 1 + rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * u / period + rng.uniform(0, 6.3))[:, :, None]
    if rng.random() < 0.5:  # sub-pixel stripes: R, G, B columns
        phase = (np.arange(size) % 3)[None, :, None] == np.arange(3)[None, None, :]
        out = out * (1 + rng.uniform(0.02, 0.08) * (phase.astype(np.float32) - 1 / 3))
    return out


def _glare(size: int, rng: np.random.Generator) -> np.ndarray:
    """Additive specular reflection: a soft bright ellipse or a diagonal band."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = rng.uniform(0, 1, 2)
    if rng.random() < 0.5:
        d = ((xx - cx) / rng.uniform(0.1, 0.4)) ** 2 + ((yy - cy) / rng.uniform(0.1, 0.4)) ** 2
    else:
        angle = rng.uniform(0, np.pi)
        d = (((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / rng.uniform(0.05, 0.2)) ** 2
    return (rng.uniform(30, 120) * np.exp(-d))[:, :, None]


def _face_ellipse(size: int, face_frac: float, rng: np.random.Generator) -> np.ndarray:
    """Soft mask of the face region (centre of the crop), slightly jittered."""
    m = np.zeros((size, size), np.float32)
    c = (int(size / 2 + rng.normal(0, 0.02 * size)), int(size / 2 + rng.normal(0, 0.03 * size)))
    ax = (max(2, int(size * face_frac * rng.uniform(0.5, 0.65))),
          max(3, int(size * face_frac * rng.uniform(0.65, 0.85))))
    cv2.ellipse(m, c, ax, rng.uniform(-8, 8), 0, 360, 1.0, -1, cv2.LINE_AA)
    return m


# ---- the attacks -------------------------------------------------------------------------------


def _print_look(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paper: compressed gamut (no deep blacks, dull whites), warm cast, halftone, paper grain."""
    x = 255 * (rng.uniform(0.05, 0.18) + x / 255 * rng.uniform(0.65, 0.85))
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.55, 0.95)
    x = x * np.array([rng.uniform(1.0, 1.08), 1.0, rng.uniform(0.82, 0.98)], np.float32)
    if rng.random() < 0.7:
        x = _halftone(np.clip(x, 0, 255), rng)
    size = x.shape[0]
    grain = cv2.resize(rng.normal(0, 1, (size // 4 + 1, size // 4 + 1)).astype(np.float32), (size, size))
    x = x * (1 + rng.uniform(0.02, 0.06) * grain[:, :, None]) + rng.normal(0, 2, x.shape)
    return _blur(np.clip(x, 0, 255), rng.uniform(0.0, 0.9))


def _screen_look(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Display: gamma change, raised black level, blue cast, moiré, glare, softness."""
    size = x.shape[0]
    x = 255 * (x / 255) ** rng.uniform(0.7, 1.4)
    x = rng.uniform(5, 35) + x * rng.uniform(0.75, 1.0)
    x = x * np.array([rng.uniform(0.88, 1.0), rng.uniform(0.95, 1.02), rng.uniform(1.0, 1.12)], np.float32)
    x = _blur(np.clip(x, 0, 255), rng.uniform(0.0, 1.0))
    x = x * _moire(size, rng)
    if rng.random() < 0.6:
        x = x + _glare(size, rng)
    return np.clip(x, 0, 255)


def synthesize(kind: str, live: np.ndarray, rng: np.random.Generator, face_frac: float,
               bg: np.ndarray) -> np.ndarray:
    """A synthetic attack of `kind` (one of SYNTHETIC_KINDS) made from a live crop."""
    size = live.shape[0]
    x = live.astype(np.float32)
    scene = _surroundings(bg, rng)
    if kind == "synthetic_mask":
        # a printed face cut out along its outline (eye holes keep the real eyes), worn or held
        # in front of a real head: printed inside the ellipse, real outside, a visible cut edge
        printed = _print_look(x, rng)
        m = _face_ellipse(size, face_frac, rng)
        if rng.random() < 0.6:
            eyes = np.zeros_like(m)
            for side in (-1, 1):
                c = (int(size / 2 + side * 0.2 * face_frac * size), int(size / 2 - 0.12 * face_frac * size))
                r = max(1, int(0.07 * face_frac * size))
                cv2.ellipse(eyes, c, (r + 1, r), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
            m = np.clip(m - eyes, 0, 1)
        edge = np.clip(cv2.dilate(m, np.ones((3, 3), np.uint8)) - m, 0, 1)[:, :, None]
        m = m[:, :, None]
        out = x * (1 - m) + printed * m
        out = out * (1 - edge * rng.uniform(0.1, 0.4))  # the shadow of the paper edge
        if rng.random() < 0.4:
            out = _fingers(out, _quad(size, rng, face_frac * 0.6), rng)
        return _u8(out)
    if kind == "synthetic_print":
        content, frame_value, reach = _print_look(x, rng), rng.uniform(200, 250), (0.7, 1.3)
    elif kind == "synthetic_replay":
        content, frame_value, reach = _screen_look(x, rng), rng.uniform(0, 50), (0.8, 1.6)
    else:
        raise ValueError(f"unknown synthetic attack {kind!r}")
    # the instrument (paper or screen) spans a tilted quad reaching past the face by `reach`;
    # a margin/bezel and the scene around it show where it ends inside the crop
    quad = _quad(size, rng, min(0.62, face_frac * rng.uniform(*reach)))
    warped, cover = _tilt(content, rng), _poly_mask(size, quad)
    band = _frame(size, quad, rng.uniform(0.5, 0.09 * size))[:, :, None]
    cover = cover[:, :, None]
    out = scene * (1 - cover) + warped * cover
    out = out * (1 - band) + frame_value * band
    if rng.random() < 0.5:
        out = _fingers(out, quad, rng)
    if rng.random() < 0.5:
        out = _u8(out)
        out = _jpeg(out, rng.integers(50, 95))
    return _u8(out)
