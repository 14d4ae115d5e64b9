"""Drawing the synthetic benchmark's frames: the backgrounds (photographs, procedural rooms, plain
colour), the target's flat bodies and the source's lit, clothed ones (``synthetic.render`` puts them
together)."""

from __future__ import annotations

import colorsys
import csv
import functools
import io
import math
from importlib import resources

import cv2
import numpy as np

from dfa_ray.data.poses import JOINT, project
from dfa_ray.data.styles import DomainStyle
from dfa_ray.method.skeleton import BONES, JOINT_NAMES

_LIMB_WIDTH_MM = {"thigh": 150, "shin": 110, "upper_arm": 95, "forearm": 75, "neck": 90, "foot": 80}


def photo_sources() -> list[dict[str, str]]:
    """The rows of ``backgrounds/SOURCES.csv``: file, pool, package, version, path, licence, notes."""
    folder = resources.files("dfa_ray.data").joinpath("backgrounds")
    return list(csv.DictReader(io.StringIO(folder.joinpath("SOURCES.csv").read_text(encoding="utf-8"))))


@functools.cache
def background_photos(pool: str) -> tuple[np.ndarray, ...]:
    """The background photos of one pool (``source`` or ``target``) of ``backgrounds/SOURCES.csv``, RGB.

    Read from the package's data files, so an editable and a regular install both find them; cached
    per process (the 27 photos take ~6 MB decoded).
    """
    folder = resources.files("dfa_ray.data").joinpath("backgrounds")
    photos = []
    for row in photo_sources():
        if row["pool"] != pool:
            continue
        data = np.frombuffer(folder.joinpath(row["file"]).read_bytes(), np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"background photo {row['file']} cannot be decoded")
        photos.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not photos:
        raise ValueError(f"no background photos in pool {pool!r} of backgrounds/SOURCES.csv")
    return tuple(photos)


@functools.cache
def _photo_pool(pool: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Each photo of the pool with a half-size copy, which crops shrunk by more than 1.4x are cut from."""
    return tuple((p, cv2.resize(p, (p.shape[1] // 2, p.shape[0] // 2), interpolation=cv2.INTER_AREA))
                 for p in background_photos(pool))  # fmt: skip


def _photo(rng: np.random.Generator, pool: str, width: int, height: int) -> np.ndarray:
    """A random crop of a random photo of ``pool``: zoomed 1-3x, maybe mirrored, re-exposed."""
    photos = _photo_pool(pool)
    photo, half = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    zoom = rng.uniform(0.35, 1.0)  # of the largest crop of this aspect that fits
    fit = min(w / width, h / height)
    x, y = rng.uniform(0, 1, 2)
    if fit * zoom > 1.4:
        # Bilinear shrinking by more than ~1.4x aliases, and area averaging at such ratios costs 5x more
        # than the rest of the background: the half-size copy keeps bilinear at a ratio of 0.7-1.4.
        photo, fit = half, fit / 2
        h, w = photo.shape[:2]
    cw, ch = max(2, min(w, int(width * fit * zoom))), max(2, min(h, int(height * fit * zoom)))
    x, y = int(x * (w - cw)), int(y * (h - ch))
    out = cv2.resize(photo[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    # Photos differ in exposure and white balance (cv2.multiply saturates at 255).
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)
    return cv2.multiply(out, (*gain.tolist(), 0.0))


def background(rng: np.random.Generator, size: int, style: DomainStyle) -> np.ndarray:
    """A frame's background in ``style``: a photo of its pool, a procedural room, or plain colour."""
    draw = rng.random()
    if draw < style.photo_probability:
        return _photo(rng, style.photo_pool, size, size)
    if draw >= style.photo_probability + style.clutter_probability:
        img = np.empty((size, size, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            img = np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
        return img
    # A room: wall and floor gradients, then furniture-like boxes, frames and lines.
    wall, floor = rng.integers(40, 220, (2, 3))
    horizon = int(rng.uniform(0.4, 0.8) * size)
    ramp = np.linspace(0.8, 1.2, size)[:, None, None]
    img = np.where(np.arange(size)[:, None, None] < horizon, wall, floor) * ramp
    img = np.broadcast_to(img, (size, size, 3)).astype(np.float32).copy()
    if rng.random() < style.poster_probability:
        # A framed photo (picture or window) on the wall, from this domain's own pool.
        pw, ph = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        x, y = int(rng.integers(0, size - pw)), int(rng.integers(0, max(1, horizon - ph)))
        img[y : y + ph, x : x + pw] = _photo(rng, style.photo_pool, pw, ph)
        cv2.rectangle(img, (x, y), (x + pw - 1, y + ph - 1), rng.integers(0, 120, 3).tolist(), 2)
    for _ in range(int(rng.integers(4, 12))):
        colour = rng.integers(0, 256, 3).tolist()
        p, q = rng.integers(-size // 4, size + size // 4, (2, 2))
        kind = rng.random()
        if kind < 0.5:
            cv2.rectangle(
                img, tuple(map(int, p)), tuple(map(int, q)), colour, -1 if rng.random() < 0.7 else 2
            )
        elif kind < 0.8:
            cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.integers(1, 5)))
        else:
            axes = tuple(int(v) for v in rng.integers(3, size // 4, 2))
            cv2.ellipse(img, tuple(map(int, p)), axes, 0, 0, 360, colour, -1)
    if style.shaded:
        img += rng.normal(0, 10, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1)[:size, :size]
    return np.clip(img, 0, 255).astype(np.uint8)


def _limb(
    img: np.ndarray, p: np.ndarray, q: np.ndarray, width: float, colour: list, shaded: bool, outlined: bool
) -> None:
    p_i, q_i = tuple(int(v) for v in np.round(p * 16)), tuple(int(v) for v in np.round(q * 16))
    w = max(1, int(round(width)))
    if not (shaded or outlined):
        cv2.line(img, p_i, q_i, colour, w, cv2.LINE_AA, shift=4)
        return
    # Cylinder shading: a dark rim, a mid tone, a highlight along the axis (outlined: no highlight).
    c = np.asarray(colour, np.float64)
    cv2.line(img, p_i, q_i, (c * 0.55).tolist(), w, cv2.LINE_AA, shift=4)
    cv2.line(img, p_i, q_i, c.tolist(), max(1, int(w * 0.7)), cv2.LINE_AA, shift=4)
    if not shaded:
        return
    cv2.line(
        img, p_i, q_i, np.minimum(c * 1.3 + 20, 255).tolist(), max(1, int(w * 0.3)), cv2.LINE_AA, shift=4
    )


def _parts(joints: np.ndarray, feet: bool = False) -> list[tuple[float, str, tuple[int, int] | None]]:
    """The drawable body parts, ``(depth, kind, bone)``, far first (painter's order); ``feet``: with a
    foot at each ankle, its bone the shin's, drawn over the shin."""
    parts = [(joints[[JOINT["thorax"], JOINT["pelvis"]], 2].mean(), "torso", None)]
    for parent, child in BONES:
        name = JOINT_NAMES[child]
        kind = {"knee": "thigh", "ankle": "shin", "elbow": "upper_arm", "wrist": "forearm"}.get(name[2:])
        if kind is None and name != "neck_nose":
            continue
        parts.append(((joints[parent, 2] + joints[child, 2]) / 2, kind or "neck", (parent, child)))
    parts.append((joints[JOINT["head"], 2], "head", None))
    parts.sort(key=lambda part: -part[0])
    if feet:
        for s in "lr":
            knee, ankle = JOINT[f"{s}_knee"], JOINT[f"{s}_ankle"]
            parts.append((joints[ankle, 2] + 1.0, "foot", (knee, ankle)))
        parts.sort(key=lambda part: -part[0])
    return parts


def _back_shows(joints: np.ndarray, to_camera: tuple) -> bool:
    """Whether the camera, ``to_camera`` from the head (a unit vector, camera frame), sees the body's
    back: then the back of the head is hair."""
    shoulders = joints[JOINT["r_shoulder"]] - joints[JOINT["l_shoulder"]]
    facing = np.cross(joints[JOINT["thorax"]] - joints[JOINT["pelvis"]], shoulders)
    return float(facing @ np.array(to_camera)) < -0.3 * float(np.linalg.norm(facing))


def _toe(joints: np.ndarray, bone: tuple[int, int], length: float) -> tuple[float, float, float]:
    """The toe of the foot at ``bone``'s (knee, ankle) ankle, ``length`` mm from it: forward (horizontal, at
    right angles to the hips) and a little down, at right angles to the shin: flat when standing, toes
    down when kneeling."""
    right = joints[JOINT["r_hip"]] - joints[JOINT["l_hip"]]
    gx, gz = -right[2], right[0]  # (0, -1, 0) x right
    knee, ankle = (tuple(joints[j].tolist()) for j in bone)
    sx, sy, sz = _unit(ankle[0] - knee[0], ankle[1] - knee[1], ankle[2] - knee[2])
    tx, ty, tz = _unit(gx, 0.0, gz)
    ty += 0.3
    k = tx * sx + ty * sy + tz * sz
    tx, ty, tz = _unit(tx - k * sx, ty - k * sy, tz - k * sz)
    return (ankle[0] + length * tx, ankle[1] + length * ty, ankle[2] + length * tz)


def draw_flat(img: np.ndarray, joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict,
               style: DomainStyle, rng: np.random.Generator, flesh: float = 0.0) -> None:  # fmt: skip
    """The subject's fixed colours, flat (optionally rimmed) or rim-and-highlight shaded, with stripes;
    with ``style.facing_cues``, shoes and the back of the head; the torso ``flesh`` mm broader than the
    hips' joints on each side (``DomainStyle.flesh_mm``)."""
    # Only flat-shaded styles draw for an outline, so the shaded domain's frames do not depend on it.
    rim = style.outline_probability
    outlined = not style.shaded and bool(rim and rng.random() < rim)
    top, bottom, skin, hair = (c.tolist() for c in subject["colours"])
    px_per_mm = camera[0] / joints[:, 2]  # at each joint's depth
    torso = np.array(_torso_corners(joints, camera, flesh))
    for _, kind, bone in _parts(joints, feet=style.facing_cues):
        if kind == "torso":
            pts = np.round(torso * 16).astype(np.int32)
            cv2.fillConvexPoly(img, pts, top, cv2.LINE_AA, shift=4)
            if style.shaded:
                for k in range(subject["stripes"]):
                    t = (k + 0.5) / subject["stripes"]
                    a, b = torso[0] * (1 - t) + torso[3] * t, torso[1] * (1 - t) + torso[2] * t
                    _limb(img, a, b, 1, (np.asarray(top) * 0.7).tolist(), False, False)
        elif kind == "head":
            h = JOINT["head"]
            radius = 100 * subject["scale"] * px_per_mm[h]
            centre = (pixels[h] + pixels[JOINT["neck_nose"]]) / 2
            back = style.facing_cues and _back_shows(joints, _unit(*(-joints[h]).tolist()))
            cv2.circle(img, _fixed(centre), int(radius * 16), hair if back else skin, -1, cv2.LINE_AA, 4)
            if not back:
                cv2.circle(img, _fixed(pixels[h]), int(radius * 10), hair, -1, cv2.LINE_AA, 4)
        elif kind == "foot":
            toe = np.array(_toe(joints, bone, 170 * subject["scale"]))
            toe_px = project(camera, toe)
            width = _LIMB_WIDTH_MM["foot"] * subject["width"] * px_per_mm[bone[1]]
            shoes = (np.asarray(bottom) * 0.4).tolist()
            _limb(img, pixels[bone[1]], toe_px, width, shoes, style.shaded, outlined)
        else:
            p, c = bone
            colour = bottom if kind in ("thigh", "shin") else (skin if kind in ("forearm", "neck") else top)
            width = _LIMB_WIDTH_MM[kind] * subject["width"] * px_per_mm[[p, c]].mean()
            _limb(img, pixels[p], pixels[c], width, colour, style.shaded, outlined)


def _fixed(point: np.ndarray | tuple) -> tuple[int, int]:
    """A pixel position in OpenCV's 4-bit fixed point (``shift=4``): sub-pixel accurate drawing."""
    return int(round(point[0] * 16)), int(round(point[1] * 16))


# Skin tones (RGB) from very light to very dark, and natural hair colours.
_SKIN_TONES = np.array([
    (255, 224, 196), (241, 194, 165), (232, 180, 143), (224, 172, 140), (210, 160, 120), (198, 134, 99),
    (176, 120, 85), (161, 102, 70), (130, 85, 60), (105, 68, 45), (85, 54, 36), (60, 40, 28),
], np.float32)  # fmt: skip
_HAIR = np.array([(20, 15, 12), (45, 30, 20), (85, 55, 32), (140, 100, 55), (195, 165, 110), (130, 125, 120)],
                 np.float32)  # fmt: skip
# Label ids of the lit renderer's part map.
_TOP, _BOTTOM, _SKIN, _HAIR_ID, _SHOES = 1, 2, 3, 4, 5
_SHADE_SCALE = 200.0  # shade is stored as uint8 value / 200, so highlights can exceed 1


def _colour(rng: np.random.Generator, saturation: tuple, value: tuple) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, np.float32) * 255


class _Cloth:
    """A garment: plain, striped, checked, mottled (low-frequency noise) or graded between two colours.

    Stripes and gradients run across and along the torso's image axis, so they follow the body. The
    pattern is evaluated only at the pixels the garment covers (``colours``): cheaper than a texture.
    """

    def __init__(self, rng: np.random.Generator, size: int, axis: tuple, origin: tuple, px_per_mm: float,
                 weights: tuple[float, float, float, float, float]) -> None:  # fmt: skip
        self.a, self.b = _colour(rng, (0.05, 0.9), (0.12, 0.95)), _colour(rng, (0.05, 0.9), (0.12, 0.95))
        self.kind = int(rng.choice(5, p=np.asarray(weights) / sum(weights)))
        self.axis, self.origin = axis, origin
        if self.kind in (1, 2):
            period = rng.uniform(60, 160) * px_per_mm  # 3-9 px at 128 px: coarser than the pixel grid
            self.frequency, self.phase = 2 * np.pi / period, rng.uniform(0, 2 * np.pi)
        elif self.kind == 3:
            cells = max(2, size // 10)
            self.noise = cv2.resize(rng.random((cells, cells), np.float32), (size, size), interpolation=2)
        elif self.kind == 4:
            self.span = rng.uniform(400, 900) * px_per_mm

    def colours(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """RGB float32 ``(n, 3)`` at pixels ``(xs, ys)``."""
        if self.kind == 0:
            return self.a
        if self.kind == 3:
            t = np.clip(self.noise[ys, xs], 0, 1) * np.float32(0.7)
        else:
            x, y = xs.astype(np.float32) - self.origin[0], ys.astype(np.float32) - self.origin[1]
            along = x * self.axis[0] + y * self.axis[1]
            if self.kind == 4:
                t = np.clip(along / np.float32(self.span) + np.float32(0.5), 0, 1)
            else:
                t = np.sin(along * np.float32(self.frequency) + np.float32(self.phase)) > 0
                if self.kind == 2:
                    across = x * self.axis[1] - y * self.axis[0]
                    t ^= np.sin(across * np.float32(self.frequency)) > 0
                t = t.astype(np.float32)
        return self.a + (self.b - self.a) * t[:, None]


def _unit(x: float, y: float, z: float) -> tuple[float, float, float]:
    n = math.sqrt(x * x + y * y + z * z) + 1e-12
    return x / n, y / n, z / n


class _LitCanvas:
    """Part labels, shading and coverage of one lit person, drawn far to near, then composited.

    Every part is drawn three times: its label (which garment colours a pixel), its shade (Lambert
    light on a cylinder, in bands across the limb) and its anti-aliased coverage. Vector maths is on
    Python floats: for 3-vectors that is several times faster than numpy.
    """

    def __init__(self, size: int, light: tuple, ambient: float, diffuse: float) -> None:
        self.label = np.zeros((size, size), np.uint8)
        self.shade = np.zeros((size, size), np.uint8)
        self.alpha = np.zeros((size, size), np.uint8)
        self.light, self.ambient, self.diffuse = light, ambient, diffuse

    def value(self, nx: float, ny: float, nz: float, factor: float = 1.0) -> int:
        """The stored shade of a surface with normal ``n``."""
        lx, ly, lz = self.light
        v = (self.ambient + self.diffuse * max(0.0, nx * lx + ny * ly + nz * lz)) * factor
        return min(255, int(v * _SHADE_SCALE + 0.5))

    def limb(self, p: tuple, q: tuple, a3: tuple, b3: tuple, width: float, label: int,
             shade_width: float | None = None) -> None:  # fmt: skip
        """A cylinder from camera-frame ``a3`` to ``b3`` (pixels ``p``, ``q``), ``width`` pixels wide."""
        w = max(1, int(width + 0.5))
        p16, q16 = _fixed(p), _fixed(q)
        cv2.line(self.label, p16, q16, label, w, cv2.LINE_8, shift=4)
        cv2.line(self.alpha, p16, q16, 255, w, cv2.LINE_AA, shift=4)
        dx, dy, dz = _unit(b3[0] - a3[0], b3[1] - a3[1], b3[2] - a3[2])
        mx, my, mz = (a3[0] + b3[0]) / 2, (a3[1] + b3[1]) / 2, (a3[2] + b3[2]) / 2
        # The cylinder's normal that faces straight away from the camera, and the one across it.
        vx, vy, vz = _unit(mx, my, mz)
        k = vx * dx + vy * dy + vz * dz
        ax, ay, az = _unit(vx - k * dx, vy - k * dy, vz - k * dz)
        cx, cy, cz = dy * az - dz * ay, dz * ax - dx * az, dx * ay - dy * ax
        ex, ey = q[0] - p[0], q[1] - p[1]
        n = math.hypot(ex, ey) + 1e-9
        px_, py_ = -ey / n, ex / n
        # Which side of the drawn line ``+across`` lands on: the image shift of a point moved along it.
        sign = 1.0 if (mz * cx - mx * cz) * px_ + (mz * cy - my * cz) * py_ >= 0 else -1.0
        rim = min(
            self.value(-0.3 * ax + s * cx, -0.3 * ay + s * cy, -0.3 * az + s * cz) for s in (0.95, -0.95)
        )
        cv2.line(self.shade, p16, q16, int(rim * 0.7), w, cv2.LINE_8, shift=4)
        sw = shade_width or width
        band = max(1, int(sw * 0.3 + 0.5))
        for t in (-0.5, -0.17, 0.17, 0.5):
            c, s = -math.sqrt(1 - t * t), t * sign
            value = self.value(c * ax + s * cx, c * ay + s * cy, c * az + s * cz)
            ox, oy = px_ * t * sw / 2, py_ * t * sw / 2
            a16, b16 = _fixed((p[0] + ox, p[1] + oy)), _fixed((q[0] + ox, q[1] + oy))
            cv2.line(self.shade, a16, b16, value, band, cv2.LINE_8, shift=4)

    def disc(self, centre: tuple, radius: float, label: int, to_camera: tuple) -> None:
        """A sphere's silhouette with a highlight offset towards the light."""
        c16, r16 = _fixed(centre), max(16, int(radius * 16))
        cv2.circle(self.label, c16, r16, label, -1, cv2.LINE_8, 4)
        cv2.circle(self.alpha, c16, r16, 255, -1, cv2.LINE_AA, 4)
        cv2.circle(self.shade, c16, r16, self.value(*to_camera, 0.8), -1, cv2.LINE_8, 4)
        n = math.hypot(self.light[0], self.light[1]) + 1e-9
        lx, ly = self.light[0] / n, self.light[1] / n
        value = self.value(*_unit(to_camera[0] + 0.6 * lx, to_camera[1] + 0.6 * ly, to_camera[2]))
        hi = (centre[0] + lx * radius * 0.35, centre[1] + ly * radius * 0.35)
        cv2.circle(self.shade, _fixed(hi), max(8, int(radius * 9)), value, -1, cv2.LINE_8, 4)

    def composite(self, background: np.ndarray, plain: dict, cloth: dict) -> np.ndarray:
        """Colour parts (``{label: RGB}``, ``{label: _Cloth}``), shade them, lay them on ``background``."""
        # The fringe that anti-aliasing leaves outside every label is drawn dark: a contour.
        lut = np.full((256, 1, 3), 30, np.uint8)
        for label, colour in plain.items():
            lut[label] = np.clip(colour, 0, 255)
        body = cv2.LUT(cv2.merge((self.label,) * 3), lut)
        for label, garment in cloth.items():
            ys, xs = np.nonzero(self.label == label)
            body[ys, xs] = np.clip(garment.colours(xs, ys), 0, 255)
        # Soften the shading bands into a gradient; 1.0 in shade is _SHADE_SCALE.
        shade = cv2.GaussianBlur(self.shade, (0, 0), 0.8)
        lit = cv2.multiply(body, cv2.merge((shade,) * 3), scale=1 / _SHADE_SCALE)
        alpha = self.alpha.astype(np.float32) * np.float32(1 / 255)
        return cv2.blendLinear(lit, background, alpha, 1 - alpha)


def _torso_corners(joints: np.ndarray, camera: np.ndarray, flesh: float) -> list[tuple[float, float]]:
    """Pixels of the torso's outline (left shoulder, right shoulder, right hip, left hip): the joints,
    moved ``flesh`` mm outwards along the hips' line (the shoulders 0.4 of it, along theirs)."""
    corners = []
    for left, right, reach in (("l_shoulder", "r_shoulder", 0.4 * flesh), ("l_hip", "r_hip", flesh)):
        lj, rj = joints[JOINT[left]], joints[JOINT[right]]
        out = (lj - rj) / max(float(np.linalg.norm(lj - rj)), 1e-6) * reach
        corners.append((lj + out, rj - out))
    (ls, rs), (lh, rh) = corners
    return [tuple(p) for p in project(camera, np.stack([ls, rs, rh, lh])).tolist()]


def draw_lit(img: np.ndarray, joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict,
              rng: np.random.Generator, flesh: float = 0.0) -> np.ndarray:  # fmt: skip
    """A person in clothes drawn for this frame, lit by one directional light (SURREAL-like); the torso
    ``flesh`` mm broader than the hips' joints on each side (``DomainStyle.flesh_mm``)."""
    size = img.shape[0]
    px_per_mm = (camera[0] / joints[:, 2]).tolist()
    J, P = [tuple(j) for j in joints.tolist()], [tuple(p) for p in pixels.tolist()]
    # The light comes from above, mostly from the camera's side (direction towards the light).
    light = _unit(rng.uniform(-1, 1), rng.uniform(-1.4, -0.2), rng.uniform(-1.2, 0.4))
    ambient = rng.uniform(0.3, 0.55)
    canvas = _LitCanvas(size, light, ambient, 1 - ambient + rng.uniform(0, 0.2))
    pelvis, thorax = P[JOINT["pelvis"]], P[JOINT["thorax"]]
    n = math.hypot(thorax[0] - pelvis[0], thorax[1] - pelvis[1])
    axis = ((thorax[0] - pelvis[0]) / n, (thorax[1] - pelvis[1]) / n) if n > 1e-6 else (0.0, -1.0)
    scale = sum(px_per_mm) / len(px_per_mm)
    cloth = {
        _TOP: _Cloth(rng, size, axis, pelvis, scale, (3, 2, 1, 2, 1)),
        _BOTTOM: _Cloth(rng, size, axis, pelvis, scale, (5, 0.5, 0.5, 2, 1)),
    }
    plain = {
        _SKIN: _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))] * np.float32(rng.uniform(0.93, 1.07)),
        _HAIR_ID: _HAIR[int(rng.integers(len(_HAIR)))],
        _SHOES: _colour(rng, (0.0, 0.6), (0.05, 0.5)),
    }
    sleeves = _TOP if rng.random() < 0.5 else _SKIN
    legs = _SKIN if rng.random() < 0.2 else _BOTTOM  # shorts
    labels = {"upper_arm": _TOP, "forearm": sleeves, "neck": _SKIN, "thigh": _BOTTOM, "shin": legs}
    width = subject["width"]
    for _, kind, bone in _parts(joints, feet=True):
        if kind == "torso":
            corners = _torso_corners(joints, camera, flesh)
            pts = np.round(np.array(corners) * 16).astype(np.int32)[None]
            depth_px = (200 + flesh) * width * scale  # a torso seen side-on is still ~20 cm deep
            breadth = max(math.dist(corners[0], corners[1]), math.dist(corners[2], corners[3]), depth_px)
            cv2.fillPoly(canvas.label, pts, _TOP, cv2.LINE_8, 4)
            cv2.fillPoly(canvas.alpha, pts, 255, cv2.LINE_AA, 4)
            cv2.fillPoly(canvas.shade, pts, int(ambient * _SHADE_SCALE), cv2.LINE_8, 4)
            ix, iy = (thorax[0] - pelvis[0]) * 0.12, (thorax[1] - pelvis[1]) * 0.12
            lo, hi = (pelvis[0] + ix, pelvis[1] + iy), (thorax[0] - ix, thorax[1] - iy)
            canvas.limb(lo, hi, J[JOINT["pelvis"]], J[JOINT["thorax"]], depth_px, _TOP, shade_width=breadth)
        elif kind == "head":
            h = JOINT["head"]
            radius = 100 * subject["scale"] * px_per_mm[h]
            centre = ((P[h][0] + P[h - 1][0]) / 2, (P[h][1] + P[h - 1][1]) / 2)  # head and neck_nose
            to_camera = _unit(-J[h][0], -J[h][1], -J[h][2])
            # Facing away, the back of the head is hair; facing the camera, only its top is.
            back = _back_shows(joints, to_camera)
            canvas.disc(centre, radius, _HAIR_ID if back else _SKIN, to_camera)
            if not back:
                c16, r16 = _fixed(P[h]), max(16, int(radius * 10))
                cv2.circle(canvas.label, c16, r16, _HAIR_ID, -1, cv2.LINE_8, 4)
                cv2.circle(canvas.alpha, c16, r16, 255, -1, cv2.LINE_AA, 4)
        elif kind == "foot":
            ankle, toe = J[bone[1]], _toe(joints, bone, 170 * subject["scale"])
            toe_px = tuple(project(camera, np.array(toe)).tolist())
            foot_w = _LIMB_WIDTH_MM["foot"] * width * px_per_mm[bone[1]]
            canvas.limb(P[bone[1]], toe_px, ankle, toe, foot_w, _SHOES)
        else:
            p, c = bone
            w = _LIMB_WIDTH_MM[kind] * width * (px_per_mm[p] + px_per_mm[c]) / 2
            canvas.limb(P[p], P[c], J[p], J[c], w, labels[kind])
    return canvas.composite(img, plain, cloth)
