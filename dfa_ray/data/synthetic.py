"""The embedded benchmark: procedurally rendered people in two visually distinct domains.

- ``synthetic-source`` (SURREAL-like): flat-coloured body parts, most (70 %) with a darker rim
  where a lit mesh would have its contour, on plain or noisy backgrounds, with a small share (15 %)
  of cluttered backgrounds so that a source-only model is not hopeless on real frames.
- ``synthetic-real`` (the stand-in for real video): shaded, textured bodies in cluttered rooms,
  blur, sensor noise and a colour cast, other subjects, another action mix and a higher camera.

People come from a kinematic skeleton: per-subject bone lengths (height and proportions), joint
angles drawn from everyday actions within anatomical limits, a random yaw, and a perspective
camera 3.5-7 m away. Each frame is a square crop centred on the person with exact crop intrinsics,
so ``joints_2d`` is the projection of ``joints_3d``. Frame ``i`` of a (domain, split, seed) is a pure
function of those four values: datasets are reproducible and can be generated in parallel shards.
Subjects are disjoint between the train and test splits, as in Human3.6M's protocols.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from dfa_ray.data.images import encode_image
from dfa_ray.skeleton import BONES, JOINT_NAMES

# Bump when a change alters rendered frames: cached datasets are named after it, so none goes stale.
RENDERER_VERSION = 2
DOMAINS = ("synthetic-source", "synthetic-real")
SPLITS = ("train", "test")
ACTIONS = ("standing", "walking", "sitting", "waving", "reaching", "squatting", "bending")

# Human3.6M-like bone lengths in mm for a 1.75 m adult, by child joint.
_BONE_MM = {
    "r_hip": 130, "r_knee": 450, "r_ankle": 440, "l_hip": 130, "l_knee": 450, "l_ankle": 440,
    "spine": 230, "thorax": 250, "neck_nose": 115, "head": 115,
    "l_shoulder": 150, "l_elbow": 280, "l_wrist": 250, "r_shoulder": 150, "r_elbow": 280, "r_wrist": 250,
}  # fmt: skip
_LIMB_WIDTH_MM = {"thigh": 150, "shin": 110, "upper_arm": 95, "forearm": 75, "neck": 90}


@dataclass(frozen=True)
class DomainStyle:
    """What distinguishes a domain: who is in it, how they move, where the camera is, how it looks."""

    subjects: dict[str, tuple[int, ...]]  # split -> subject numbers
    action_weights: tuple[float, ...]  # over ACTIONS
    camera_distance_mm: tuple[float, float]
    camera_elevation_deg: tuple[float, float]
    clutter_probability: float
    shaded: bool
    blur_sigma: tuple[float, float]
    noise_std: tuple[float, float]
    colour_cast: float
    # Share of flat-shaded frames whose limbs get a darker rim. Without one, a limb over a part of its
    # own colour (upper arm over the torso, thigh over thigh) vanishes and its joints cannot be seen.
    outline_probability: float = 0.0


STYLES = {
    "synthetic-source": DomainStyle(
        subjects={"train": tuple(range(1, 9)), "test": (9, 10)},
        action_weights=(1, 1, 1, 1, 1, 1, 1),
        camera_distance_mm=(3500, 6000),
        camera_elevation_deg=(-10, 15),
        clutter_probability=0.15,
        shaded=False,
        blur_sigma=(0.0, 0.0),
        noise_std=(0.0, 0.0),
        colour_cast=0.0,
        outline_probability=0.7,
    ),
    "synthetic-real": DomainStyle(
        subjects={"train": (11, 12, 13, 14, 15), "test": (16, 17)},
        action_weights=(1.5, 2, 1.5, 0.7, 0.7, 0.5, 0.5),
        camera_distance_mm=(4000, 7000),
        camera_elevation_deg=(0, 25),
        clutter_probability=1.0,
        shaded=True,
        blur_sigma=(0.0, 1.2),
        noise_std=(2.0, 8.0),
        colour_cast=0.15,
    ),
}


def _subject(number: int) -> dict:
    """A subject's body: height scale, per-bone proportions and clothing colours, fixed by its number."""
    rng = np.random.default_rng([7919, number])
    return {
        "scale": rng.uniform(0.88, 1.1),
        "bones": {name: rng.uniform(0.93, 1.07) for name in _BONE_MM},
        "width": rng.uniform(0.85, 1.2),
        "colours": rng.integers(30, 230, (4, 3)),  # top, bottom, skin, hair
        "stripes": int(rng.integers(3, 8)),
    }


def _bend(d: np.ndarray, toward: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate unit vector ``d`` by ``degrees`` in the plane it spans with ``toward``."""
    t = toward - (toward @ d) * d
    norm = np.linalg.norm(t)
    if norm < 1e-9:
        return d
    a = np.deg2rad(degrees)
    return np.cos(a) * d + np.sin(a) * (t / norm)


def _action_angles(action: str, rng: np.random.Generator) -> dict[str, float]:
    """Joint angles (degrees) for one frame of an action, within anatomical limits."""
    u = rng.uniform
    a = {
        "lean": u(-5, 10), "roll": u(-6, 6), "head": u(-15, 25),
        "hip_l": u(-10, 20), "hip_r": u(-10, 20), "abd_l": u(0, 15), "abd_r": u(0, 15),
        "knee_l": u(0, 20), "knee_r": u(0, 20), "sh_l": u(-15, 30), "sh_r": u(-15, 30),
        "sab_l": u(5, 30), "sab_r": u(5, 30), "elb_l": u(0, 40), "elb_r": u(0, 40),
    }  # fmt: skip
    phase = u(0, 2 * np.pi)
    side = "l" if rng.random() < 0.5 else "r"
    other = "r" if side == "l" else "l"
    if action == "walking":
        swing = u(20, 35)
        a |= {"hip_l": swing * np.sin(phase), "hip_r": -swing * np.sin(phase),
              "knee_l": max(0.0, 50 * np.sin(phase + 1.2)), "knee_r": max(0.0, -50 * np.sin(phase + 1.2)),
              "sh_l": -swing * np.sin(phase), "sh_r": swing * np.sin(phase),
              "elb_l": u(10, 40), "elb_r": u(10, 40)}  # fmt: skip
    elif action == "sitting":
        a |= {"hip_l": u(75, 100), "hip_r": u(75, 100), "knee_l": u(70, 110), "knee_r": u(70, 110),
              "lean": u(-10, 15), "elb_l": u(30, 90), "elb_r": u(30, 90),
              "sh_l": u(0, 45), "sh_r": u(0, 45)}  # fmt: skip
    elif action == "waving":
        a |= {f"sab_{side}": u(100, 170), f"elb_{side}": u(20, 100), f"sh_{side}": u(-10, 30)}
    elif action == "reaching":
        a |= {f"sh_{side}": u(60, 130), f"elb_{side}": u(0, 30), f"sab_{side}": u(0, 40), "lean": u(0, 25)}
        if rng.random() < 0.4:
            a |= {f"sh_{other}": u(60, 130), f"elb_{other}": u(0, 30)}
    elif action == "squatting":
        a |= {"hip_l": u(80, 120), "hip_r": u(80, 120), "knee_l": u(100, 140), "knee_r": u(100, 140),
              "lean": u(20, 45), "sh_l": u(30, 90), "sh_r": u(30, 90)}  # fmt: skip
    elif action == "bending":
        a |= {"lean": u(50, 90), "hip_l": u(0, 20), "hip_r": u(0, 20), "knee_l": u(0, 30), "knee_r": u(0, 30),
              "sh_l": u(40, 100), "sh_r": u(40, 100)}  # fmt: skip
    return a


def pose(action: str, subject: dict, rng: np.random.Generator) -> np.ndarray:
    """Root-relative joints ``(17, 3)`` in mm in a body frame (x right, y down, z forward)."""
    a = _action_angles(action, rng)
    length = {name: mm * subject["scale"] * subject["bones"][name] for name, mm in _BONE_MM.items()}
    # Body axes in the body frame: the person faces -z (towards a camera looking along +z).
    right, up, forward = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, -1.0])
    down = -up
    torso_up = _bend(_bend(up, forward, a["lean"]), right, a["roll"])
    torso_forward = _bend(forward, -up, a["lean"])
    j = {name: np.zeros(3) for name in JOINT_NAMES}
    j["spine"] = length["spine"] * torso_up
    j["thorax"] = j["spine"] + length["thorax"] * torso_up
    neck_dir = _bend(torso_up, torso_forward, 15 + a["head"])
    j["neck_nose"] = j["thorax"] + length["neck_nose"] * neck_dir
    j["head"] = j["neck_nose"] + length["head"] * _bend(neck_dir, -torso_forward, 25)
    for s, outward in (("l", -right), ("r", right)):
        j[f"{s}_hip"] = length[f"{s}_hip"] * outward
        thigh = _bend(_bend(down, forward, a[f"hip_{s}"]), outward, a[f"abd_{s}"])
        j[f"{s}_knee"] = j[f"{s}_hip"] + length[f"{s}_knee"] * thigh
        j[f"{s}_ankle"] = j[f"{s}_knee"] + length[f"{s}_ankle"] * _bend(thigh, -forward, a[f"knee_{s}"])
        j[f"{s}_shoulder"] = j["thorax"] + length[f"{s}_shoulder"] * outward
        arm = _bend(_bend(-torso_up, torso_forward, a[f"sh_{s}"]), outward, a[f"sab_{s}"])
        j[f"{s}_elbow"] = j[f"{s}_shoulder"] + length[f"{s}_elbow"] * arm
        toward = up if a[f"sab_{s}"] > 90 else torso_forward
        j[f"{s}_wrist"] = j[f"{s}_elbow"] + length[f"{s}_wrist"] * _bend(arm, toward, a[f"elb_{s}"])
    return np.stack([j[name] for name in JOINT_NAMES])


def _rotation_y(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def place(
    body: np.ndarray, style: DomainStyle, rng: np.random.Generator, crop_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put a body-frame pose in front of a camera and cut a person-centred square crop.

    Returns camera-frame joints (mm), the crop intrinsics and the joints' pixels in the crop.
    """
    elevation = rng.uniform(*style.camera_elevation_deg)
    # A camera above the person looks down: the scene tilts towards the camera about x.
    rotated = body @ (_rotation_x(-elevation) @ _rotation_y(rng.uniform(-180, 180))).T
    root = np.array([rng.uniform(-600, 600), rng.uniform(-300, 300), rng.uniform(*style.camera_distance_mm)])
    joints = rotated + root
    f = 1000.0  # a full-frame camera with its principal point at 0; only the crop is rendered
    uv = f * joints[:, :2] / joints[:, 2:3]
    centre = (uv.min(0) + uv.max(0)) / 2 + rng.normal(0, 0.03, 2) * np.ptp(uv, 0).max()
    side = np.ptp(uv, 0).max() * rng.uniform(1.15, 1.35)
    scale = crop_size / side
    edge = centre - side / 2  # the crop's left/top edge in full-frame pixels
    camera = np.array([f * scale, f * scale, -edge[0] * scale - 0.5, -edge[1] * scale - 0.5])
    pixels = camera[:2] * joints[:, :2] / joints[:, 2:3] + camera[2:]
    return joints, camera, pixels


def _background(rng: np.random.Generator, size: int, cluttered: bool, shaded: bool) -> np.ndarray:
    if not cluttered:
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
    if shaded:
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


def render(joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict, style: DomainStyle,
           rng: np.random.Generator, size: int) -> np.ndarray:  # fmt: skip
    """Draw the person over a background, far parts first."""
    img = _background(rng, size, rng.random() < style.clutter_probability, style.shaded)
    # Only flat-shaded styles draw for an outline, so the shaded domain's frames do not depend on it.
    rim = style.outline_probability
    outlined = not style.shaded and bool(rim and rng.random() < rim)
    top, bottom, skin, hair = (c.tolist() for c in subject["colours"])
    px_per_mm = camera[0] / joints[:, 2]  # at each joint's depth
    idx = {name: i for i, name in enumerate(JOINT_NAMES)}
    torso = np.array([pixels[idx[n]] for n in ("l_shoulder", "r_shoulder", "r_hip", "l_hip")])
    parts = [(joints[list(idx[n] for n in ("thorax", "pelvis")), 2].mean(), "torso", None)]
    for parent, child in BONES:
        name = JOINT_NAMES[child]
        kind = {"knee": "thigh", "ankle": "shin", "elbow": "upper_arm", "wrist": "forearm"}.get(name[2:])
        if kind is None and name != "neck_nose":
            continue
        parts.append(((joints[parent, 2] + joints[child, 2]) / 2, kind or "neck", (parent, child)))
    parts.append((joints[idx["head"], 2], "head", None))
    for _, kind, bone in sorted(parts, key=lambda part: -part[0]):
        if kind == "torso":
            pts = np.round(torso * 16).astype(np.int32)
            cv2.fillConvexPoly(img, pts, top, cv2.LINE_AA, shift=4)
            if style.shaded:
                for k in range(subject["stripes"]):
                    t = (k + 0.5) / subject["stripes"]
                    a, b = torso[0] * (1 - t) + torso[3] * t, torso[1] * (1 - t) + torso[2] * t
                    _limb(img, a, b, 1, (np.asarray(top) * 0.7).tolist(), False, False)
        elif kind == "head":
            h = idx["head"]
            radius = 100 * subject["scale"] * px_per_mm[h]
            centre = (pixels[h] + pixels[idx["neck_nose"]]) / 2
            cv2.circle(
                img, tuple(int(v) for v in np.round(centre * 16)), int(radius * 16), skin, -1, cv2.LINE_AA, 4
            )
            cv2.circle(
                img,
                tuple(int(v) for v in np.round(pixels[h] * 16)),
                int(radius * 10),
                hair,
                -1,
                cv2.LINE_AA,
                4,
            )
        else:
            p, c = bone
            colour = bottom if kind in ("thigh", "shin") else (skin if kind in ("forearm", "neck") else top)
            width = _LIMB_WIDTH_MM[kind] * subject["width"] * px_per_mm[[p, c]].mean()
            _limb(img, pixels[p], pixels[c], width, colour, style.shaded, outlined)
    if style.colour_cast:
        img = np.clip(img * (1 + rng.uniform(-style.colour_cast, style.colour_cast, 3)), 0, 255).astype(
            np.uint8
        )
    blur = rng.uniform(*style.blur_sigma)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise = rng.uniform(*style.noise_std)
    if noise > 0:
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    return img


def render_frame(domain: str, split: str, index: int, seed: int = 0, crop_size: int = 128) -> dict:
    """Frame ``index`` of a domain's split, as a schema-v1 row."""
    if domain not in STYLES:
        raise ValueError(f"unknown synthetic domain {domain!r}; choose from {DOMAINS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    style = STYLES[domain]
    rng = np.random.default_rng([seed, DOMAINS.index(domain), SPLITS.index(split), index])
    number = int(rng.choice(style.subjects[split]))
    subject = _subject(number)
    weights = np.asarray(style.action_weights, dtype=np.float64)
    action = ACTIONS[int(rng.choice(len(ACTIONS), p=weights / weights.sum()))]
    joints, camera, pixels = place(pose(action, subject, rng), style, rng, crop_size)
    image = render(joints, camera, pixels, subject, style, rng, crop_size)
    return {
        "frame_id": f"{domain}/{split}/{seed}/{index:07d}",
        "image": encode_image(image),
        "joints_2d": pixels.astype(np.float32),
        "joints_3d": joints.astype(np.float32),
        "camera": camera.astype(np.float32),
        "subject": f"S{number:02d}",
        "action": action,
    }


def _render_range(spec: tuple[str, str, int, int, int, int]) -> list[dict]:
    domain, split, start, n, seed, crop_size = spec
    return [render_frame(domain, split, index, seed, crop_size) for index in range(start, start + n)]


def generate(
    domain: str, split: str, n: int, seed: int = 0, crop_size: int = 128, start: int = 0, workers: int = 1
) -> Iterator[dict]:
    """Frames ``start .. start + n - 1`` of a domain's split, in order, rendered by ``workers`` processes."""
    chunk = 256 if workers > 1 else 1
    specs = [
        (domain, split, i, min(chunk, start + n - i), seed, crop_size) for i in range(start, start + n, chunk)
    ]
    if workers <= 1:
        for spec in specs:
            yield from _render_range(spec)
        return
    with ProcessPoolExecutor(workers) as pool:
        for rows in pool.map(_render_range, specs):
            yield from rows
