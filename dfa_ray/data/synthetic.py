"""The embedded benchmark: procedurally rendered people in two visually distinct domains.

- ``synthetic-source`` (SURREAL-like): people over real photographs (SURREAL composites its renders
  over LSUN photos; ours are permissively licensed photos shipped in ``backgrounds/``, see its
  ``SOURCES.csv``), 15 % over plain or noisy colour, wearing clothes drawn per frame (plain, striped,
  checked, mottled or graded colours, short or long sleeves, a skin tone) and lit by one directional
  light per frame that shades every limb, the torso and the head as cylinders and a sphere. Half the
  frames show a bystander behind and beside the person, partly in view (renderer v5): a model trained
  without them scored worse on real footage with several people in it (docs/data.md). Cameras range
  from 10 degrees below the pelvis to 35 above it (renderer v6; v5 stopped at 15): real cameras are
  mostly mounted above people (Pose2Sim's demo cameras look down 18-25 degrees), and a model that never
  saw a camera that high predicted their people upright in the camera's frame, leaning 28 degrees off
  (docs/data.md).
- ``synthetic-real`` (the stand-in for real video): flat-lit, rim-shaded, striped bodies in
  procedural rooms (some with a framed photo from a disjoint pool on the wall), blur, sensor noise and
  a colour cast, other subjects, another action mix and a camera above the person (0-25 degrees), as
  Human3.6M's are.

People come from a kinematic skeleton: per-subject bone lengths (height and proportions), joint
angles drawn per action (standing, walking with opposite arm and leg swing, kneeling, lunging, hands on
hips, picking something up, ...) and clipped to per-joint limits (``JOINT_LIMITS_DEG``), a random yaw,
and a perspective camera 3.5-7 m away. Each frame is a square crop centred on the person with exact
crop intrinsics, so ``joints_2d`` is the projection of ``joints_3d``. Frame ``i`` of a (domain, split,
seed) is a pure function of those four values: datasets are reproducible and can be generated in
parallel shards. Subjects are disjoint between the train and test splits, as in Human3.6M's protocols.
"""

from __future__ import annotations

import colorsys
import csv
import functools
import io
import math
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources

import cv2
import numpy as np

from dfa_ray.data.images import encode_image
from dfa_ray.method.skeleton import BONES, JOINT_NAMES, NOMINAL_BONE_MM

# Bump when a change alters rendered frames: cached datasets are named after it, so none goes stale.
RENDERER_VERSION = 6
DOMAINS = ("synthetic-source", "synthetic-real")
_JOINT = {name: i for i, name in enumerate(JOINT_NAMES)}  # a joint's row in a (17, 3) pose
SPLITS = ("train", "test")
ACTIONS = (
    "standing", "walking", "sitting", "waving", "reaching", "squatting", "bending", "kneeling", "lunging",
    "hands_on_hips", "arms_crossed", "looking_around", "picking_up", "stretching",
)  # fmt: skip

_LIMB_WIDTH_MM = {"thigh": 150, "shin": 110, "upper_arm": 95, "forearm": 75, "neck": 90, "foot": 80}

# Anatomical range of every pose angle in degrees (adult active range of motion, rounded). Flexion
# is positive: the torso leaning forward, a thigh or an arm swinging forward, a knee or elbow bending.
JOINT_LIMITS_DEG = {
    "lean": (-20.0, 95.0),  # torso flexion at the hips
    "roll": (-25.0, 25.0),  # torso side bend
    "twist": (-40.0, 40.0),  # shoulders against the pelvis
    "neck": (-35.0, 50.0),  # head nod
    "head_yaw": (-75.0, 75.0),  # looking left or right
    "hip": (-30.0, 125.0),
    "abd": (-15.0, 45.0),  # hip abduction
    "knee": (0.0, 150.0),
    "sh": (-50.0, 180.0),  # shoulder flexion
    "sab": (0.0, 170.0),  # shoulder abduction
    "elb": (0.0, 145.0),
    "erot": (-40.0, 110.0),  # where the forearm bends to: 0 forward (or up), 90 across the body
}


@dataclass(frozen=True)
class DomainStyle:
    """What distinguishes a domain: who is in it, how they move, where the camera is, how it looks."""

    subjects: dict[str, tuple[int, ...]]  # split -> subject numbers
    action_weights: tuple[float, ...]  # over ACTIONS
    camera_distance_mm: tuple[float, float]
    camera_elevation_deg: tuple[float, float]  # above the person's pelvis, looking down; negative: up
    clutter_probability: float  # share of frames in a procedural room
    shaded: bool
    blur_sigma: tuple[float, float]
    noise_std: tuple[float, float]
    colour_cast: float
    # Share of flat-shaded frames whose limbs get a darker rim. Without one, a limb over a part of its
    # own colour (upper arm over the torso, thigh over thigh) vanishes and its joints cannot be seen.
    outline_probability: float = 0.0
    photo_probability: float = 0.0  # share of frames over a photo of ``photo_pool`` (before rooms)
    photo_pool: str = "source"  # the pool of backgrounds/SOURCES.csv this domain's photos come from
    poster_probability: float = 0.0  # share of rooms with a framed photo on the wall
    # Clothes, skin tone and hair drawn per frame and a directional light per frame (SURREAL-like),
    # instead of one flat colour scheme per subject.
    lit_bodies: bool = False
    # Flat bodies only: draw the cues a real person's front and back show, the back of the head as hair
    # when the body faces away and shoes pointing forward, as lit bodies always do. Without them a flat
    # body's facing shows only in which limbs hide which.
    facing_cues: bool = False
    # Lit bodies only: share of frames with a bystander, another person behind and beside the one the
    # crop is about, partly in view, as a detector's crop of real footage with several people shows.
    bystander_probability: float = 0.0
    # The camera's contrast about mid-grey, drawn per frame: below 1 a flat, hazy exposure that keeps
    # what the frame shows. Both domains keep 1; the benchmarks draw targets with less.
    contrast: tuple[float, float] = (1.0, 1.0)
    # How far the torso reaches beyond the hip joints on each side, in mm, drawn per person; the
    # shoulders get 0.4 of it. (0, 0) draws the torso between the joints, as narrow as a
    # skeleton: real hips are about twice as broad as the joints' centres (a trochanter ~8 cm out).
    flesh_mm: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        # The flat renderer draws one person: a bystander drawn for it would be lost without a word.
        if self.bystander_probability and not self.lit_bodies:
            raise ValueError("bystander_probability needs lit_bodies: the flat renderer draws one person")
        if self.facing_cues and self.lit_bodies:
            raise ValueError("facing_cues is for flat bodies: lit bodies always show them")
        if not 0 < self.contrast[0] <= self.contrast[1]:
            raise ValueError(f"contrast must be a range (low, high), 0 < low <= high: got {self.contrast}")
        if not 0 <= self.flesh_mm[0] <= self.flesh_mm[1]:
            raise ValueError(f"flesh_mm must be a range (low, high), 0 <= low <= high: got {self.flesh_mm}")


STYLES = {
    "synthetic-source": DomainStyle(
        subjects={"train": tuple(range(1, 9)), "test": (9, 10)},
        action_weights=(1,) * len(ACTIONS),
        camera_distance_mm=(3500, 6000),
        camera_elevation_deg=(-10, 35),
        clutter_probability=0.0,
        shaded=False,
        blur_sigma=(0.0, 0.0),
        noise_std=(0.0, 0.0),
        colour_cast=0.0,
        photo_probability=0.85,
        photo_pool="source",
        lit_bodies=True,
        bystander_probability=0.5,
    ),
    "synthetic-real": DomainStyle(
        subjects={"train": (11, 12, 13, 14, 15), "test": (16, 17)},
        # Human3.6M-like: much standing, walking, sitting and looking around, few floor poses.
        action_weights=(1.5, 2, 1.5, 0.7, 0.7, 0.5, 0.5, 0.3, 0.3, 0.8, 0.8, 1.2, 0.5, 0.4),
        camera_distance_mm=(4000, 7000),
        camera_elevation_deg=(0, 25),
        clutter_probability=1.0,
        shaded=True,
        blur_sigma=(0.0, 1.2),
        noise_std=(2.0, 8.0),
        colour_cast=0.15,
        photo_pool="target",
        poster_probability=0.5,
    ),
}


# A style's fields by what they change: the geometry (who is filmed, their actions, where the camera
# is) and three groups of looks. The benchmarks render one domain's frames with a group of the other's
# (``swapped``): a frame's geometry is drawn before its looks, so the people and poses stay the same.
GEOMETRY = ("subjects", "action_weights", "camera_distance_mm", "camera_elevation_deg")
LOOKS = {
    "camera effects": ("blur_sigma", "noise_std", "colour_cast", "contrast"),
    "backgrounds": ("clutter_probability", "photo_probability", "photo_pool", "poster_probability"),
    "bodies": (
        "lit_bodies",
        "shaded",
        "outline_probability",
        "facing_cues",
        "bystander_probability",
        "flesh_mm",
    ),
}


def swapped(domain: str, other: str, fields: tuple[str, ...]) -> DomainStyle:
    """``domain``'s style with ``fields`` taken from ``other``'s."""
    return replace(STYLES[domain], **{f: getattr(STYLES[other], f) for f in fields})


def restyled(domain: str, changes: Mapping[str, object]) -> DomainStyle:
    """``domain``'s style with some fields changed (lists become ranges, as YAML gives them); a field
    the style lacks is named with the ones it has."""
    fields = sorted(STYLES[domain].__dataclass_fields__)
    unknown = [name for name in changes if name not in fields]
    if unknown:
        raise ValueError(f"no DomainStyle field {', '.join(map(repr, unknown))}: expected one of {fields}")
    ranges = {name: tuple(value) if isinstance(value, list) else value for name, value in changes.items()}
    return replace(STYLES[domain], **ranges)


def style_tag(changes: Mapping[str, object]) -> str:
    """A file-name tag for a style's changes, e.g. ``flesh_mm40-110`` ("" for none)."""

    def value(v: object) -> str:
        return "-".join(f"{x:g}" for x in v) if isinstance(v, (list, tuple)) else str(v)

    return "-".join(f"{name}{value(v)}" for name, v in sorted(changes.items()))


def _subject(number: int) -> dict:
    """A subject's body: height scale, per-bone proportions and clothing colours, fixed by its number."""
    rng = np.random.default_rng([7919, number])
    return {
        "scale": rng.uniform(0.88, 1.1),
        "bones": {name: rng.uniform(0.93, 1.07) for name in NOMINAL_BONE_MM},
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


def _axis_rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about unit ``axis`` (right-handed, Rodrigues)."""
    a = np.deg2rad(degrees)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def clip_to_limits(angles: dict[str, float]) -> dict[str, float]:
    """Clip pose angles to ``JOINT_LIMITS_DEG`` (``hip_l`` is limited by ``hip``, and so on)."""
    out = {}
    for name, value in angles.items():
        low, high = JOINT_LIMITS_DEG[name.split("_")[0] if name[-2:] in ("_l", "_r") else name]
        out[name] = float(min(max(value, low), high))
    return out


def _relaxed_arms(a: dict[str, float], rng: np.random.Generator) -> None:
    """Arms hanging under gravity: a torso leaning forward leaves them vertical, not along the torso."""
    for s in "lr":
        a[f"sh_{s}"] = a["lean"] + rng.uniform(-12, 15)
        a[f"sab_{s}"] = rng.uniform(4, 18)
        a[f"elb_{s}"] = rng.uniform(5, 30)
        a[f"erot_{s}"] = rng.uniform(-10, 30)


def _action_angles(action: str, rng: np.random.Generator) -> dict[str, float]:
    """Joint angles (degrees) for one frame of an action, clipped to ``JOINT_LIMITS_DEG``.

    Angles within an action are correlated the way people move: knee flexion follows hip flexion when
    squatting, arms swing against the legs when walking, relaxed arms hang vertically whatever the lean.
    """
    u = rng.uniform
    a = {
        "lean": u(-5, 10), "roll": u(-6, 6), "twist": u(-10, 10), "neck": u(-10, 20), "head_yaw": u(-25, 25),
        "hip_l": u(-5, 12), "hip_r": u(-5, 12), "abd_l": u(0, 12), "abd_r": u(0, 12),
        "knee_l": u(0, 15), "knee_r": u(0, 15),
    }  # fmt: skip
    _relaxed_arms(a, rng)
    phase = u(0, 2 * np.pi)
    side = "l" if rng.random() < 0.5 else "r"
    other = "r" if side == "l" else "l"
    if action == "standing":
        # Weight on one leg: the other knee unlocks, the hips and shoulders tilt a little.
        a |= {f"knee_{other}": u(5, 25), f"hip_{other}": u(0, 15), "roll": u(-8, 8)}
    elif action == "walking":
        swing = u(18, 35)
        s = np.sin(phase)
        a |= {
            "hip_l": 5 + swing * s, "hip_r": 5 - swing * s,
            # The swinging leg's knee flexes most just after toe-off; the stance knee stays nearly straight.
            "knee_l": 8 + max(0.0, 55 * np.sin(phase + 1.2)),
            "knee_r": 8 + max(0.0, -55 * np.sin(phase + 1.2)),
            "sh_l": -0.8 * swing * s + u(-5, 5), "sh_r": 0.8 * swing * s + u(-5, 5),
            "elb_l": u(10, 40), "elb_r": u(10, 40), "twist": -6 * s, "lean": u(0, 10), "abd_l": u(0, 6),
            "abd_r": u(0, 6),
        }  # fmt: skip
    elif action == "sitting":
        hip = u(75, 100)
        a |= {"hip_l": hip + u(-8, 8), "hip_r": hip + u(-8, 8), "knee_l": hip + u(-15, 15),
              "knee_r": hip + u(-15, 15), "lean": u(-15, 15), "abd_l": u(0, 20), "abd_r": u(0, 20),
              "twist": u(-20, 20), "head_yaw": u(-45, 45)}  # fmt: skip
        for s in "lr":  # hands in the lap
            a |= {f"sh_{s}": u(15, 45), f"elb_{s}": u(40, 90), f"erot_{s}": u(10, 60)}
    elif action == "waving":
        # The forearm points up: the higher the upper arm, the straighter the elbow (not over the head).
        sab = u(85, 140)
        a |= {f"sab_{side}": sab, f"sh_{side}": u(-10, 30), f"elb_{side}": u(20, 100) * (1.4 - sab / 200),
              f"erot_{side}": u(-20, 20), "head_yaw": u(-30, 30)}  # fmt: skip
    elif action == "reaching":
        # The trunk turns with the reaching arm.
        a |= {f"sh_{side}": u(60, 170), f"elb_{side}": u(0, 30), f"sab_{side}": u(0, 35), "lean": u(0, 25),
              "twist": u(0, 25) * (1 if side == "l" else -1)}  # fmt: skip
        if rng.random() < 0.4:
            a |= {f"sh_{other}": u(60, 130), f"elb_{other}": u(0, 30)}
    elif action == "squatting":
        hip = u(80, 120)
        a |= {"hip_l": hip + u(-5, 5), "hip_r": hip + u(-5, 5), "knee_l": hip + u(15, 30),
              "knee_r": hip + u(15, 30), "abd_l": u(10, 30), "abd_r": u(10, 30),
              "lean": u(15, 45), "sh_l": u(30, 90), "sh_r": u(30, 90)}  # fmt: skip
    elif action == "bending":
        a |= {"lean": u(50, 90), "hip_l": u(0, 20), "hip_r": u(0, 20), "knee_l": u(0, 30), "knee_r": u(0, 30)}
        _relaxed_arms(a, rng)
    elif action == "kneeling":
        if rng.random() < 0.5:  # on both knees, upright or sitting back on the heels
            back = rng.random() < 0.4
            hip, knee = (u(50, 80), u(130, 150)) if back else (u(-10, 15), u(80, 110))
            a |= {"hip_l": hip, "hip_r": hip + u(-5, 5), "knee_l": knee, "knee_r": knee + u(-5, 5)}
        else:  # on one knee: the front shin is vertical, the back thigh is
            a |= {f"hip_{side}": u(70, 100), f"knee_{side}": u(75, 100), f"hip_{other}": u(-15, 10),
                  f"knee_{other}": u(80, 110)}  # fmt: skip
        a |= {"lean": u(-5, 20), "abd_l": u(0, 15), "abd_r": u(0, 15)}
        _relaxed_arms(a, rng)
    elif action == "lunging":
        front = u(60, 95)
        a |= {f"hip_{side}": front, f"knee_{side}": front + u(0, 20), f"hip_{other}": u(-30, -10),
              f"knee_{other}": u(0, 45), "lean": u(-5, 20), "abd_l": u(0, 10), "abd_r": u(0, 10)}  # fmt: skip
        _relaxed_arms(a, rng)
        if rng.random() < 0.5:
            a |= {"sh_l": u(60, 100), "sh_r": u(60, 100), "elb_l": u(0, 30), "elb_r": u(0, 30)}
    elif action == "hands_on_hips":
        # Both hands, or one with the other arm hanging.
        for s in (side, other) if rng.random() < 0.7 else (side,):
            a |= {f"sh_{s}": u(-25, 0), f"sab_{s}": u(35, 55), f"elb_{s}": u(90, 120),
                  f"erot_{s}": u(80, 100)}  # fmt: skip
    elif action == "arms_crossed":
        for s in "lr":
            a |= {f"sh_{s}": u(25, 50), f"sab_{s}": u(5, 20), f"elb_{s}": u(110, 140),
                  f"erot_{s}": u(85, 105)}  # fmt: skip
        a |= {"head_yaw": u(-30, 30)}
    elif action == "looking_around":
        a |= {"head_yaw": u(-75, 75), "neck": u(-25, 35), "twist": u(-30, 30), "roll": u(-5, 5)}
    elif action == "picking_up":
        lean = u(35, 85)
        bend_knees = u(0, 1)  # from a stiff-legged stoop to a crouch
        hip, knee = 10 + 60 * bend_knees, 5 + 90 * bend_knees
        a |= {"lean": lean, "hip_l": hip + u(-5, 5), "hip_r": hip + u(-5, 5), "knee_l": knee + u(-5, 5),
              "knee_r": knee + u(-5, 5)}  # fmt: skip
        _relaxed_arms(a, rng)
        a |= {f"sh_{side}": lean + u(10, 40), f"elb_{side}": u(0, 20)}  # the reaching hand goes further
    elif action == "stretching":
        kind = rng.random()
        if kind < 0.5:  # both arms overhead, perhaps bending sideways
            a |= {"sh_l": u(150, 180), "sh_r": u(150, 180), "sab_l": u(0, 25), "sab_r": u(0, 25),
                  "elb_l": u(0, 25), "elb_r": u(0, 25), "roll": u(-22, 22), "lean": u(-15, 5)}  # fmt: skip
        elif kind < 0.8:  # arms out to the sides, turning the trunk
            a |= {"sab_l": u(75, 100), "sab_r": u(75, 100), "sh_l": u(-10, 20), "sh_r": u(-10, 20),
                  "elb_l": u(0, 15), "elb_r": u(0, 15), "twist": u(-40, 40)}  # fmt: skip
        else:  # a quadriceps stretch: one heel pulled up behind
            a |= {f"hip_{side}": u(-15, 5), f"knee_{side}": u(120, 150), f"sh_{side}": u(-50, -30),
                  f"elb_{side}": u(30, 70), f"erot_{side}": u(-40, -20)}  # fmt: skip
    return clip_to_limits(a)


def pose(action: str, subject: dict, rng: np.random.Generator) -> np.ndarray:
    """Root-relative joints ``(17, 3)`` in mm in a body frame (x right, y down, z forward)."""
    a = _action_angles(action, rng)
    length = {name: mm * subject["scale"] * subject["bones"][name] for name, mm in NOMINAL_BONE_MM.items()}
    # Body axes in the body frame: the person faces -z (towards a camera looking along +z). Rotating
    # about ``right`` by a positive angle swings a downward limb forwards (flexion).
    right, up, forward = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, -1.0])
    down = -up
    lower = _axis_rotation(forward, a["roll"]) @ _axis_rotation(right, -a["lean"])
    upper = lower @ _axis_rotation(up, a["twist"])  # the shoulder girdle, twisted against the pelvis
    torso_up = lower @ up
    j = {name: np.zeros(3) for name in JOINT_NAMES}
    j["spine"] = length["spine"] * torso_up
    j["thorax"] = j["spine"] + length["thorax"] * torso_up
    face = upper @ _axis_rotation(up, a["head_yaw"]) @ forward
    neck_dir = _bend(torso_up, face, 15 + a["neck"])
    j["neck_nose"] = j["thorax"] + length["neck_nose"] * neck_dir
    j["head"] = j["neck_nose"] + length["head"] * _bend(neck_dir, -face, 25)
    for s, outward in (("l", -right), ("r", right)):
        abduct = _axis_rotation(forward if s == "l" else -forward, a[f"abd_{s}"])
        j[f"{s}_hip"] = length[f"{s}_hip"] * outward
        thigh = abduct @ _axis_rotation(right, a[f"hip_{s}"]) @ down
        shin = _axis_rotation(abduct @ right, -a[f"knee_{s}"]) @ thigh
        j[f"{s}_knee"] = j[f"{s}_hip"] + length[f"{s}_knee"] * thigh
        j[f"{s}_ankle"] = j[f"{s}_knee"] + length[f"{s}_ankle"] * shin
        shoulder_out = upper @ outward
        j[f"{s}_shoulder"] = j["thorax"] + length[f"{s}_shoulder"] * shoulder_out
        arm_abduct = _axis_rotation(forward if s == "l" else -forward, a[f"sab_{s}"])
        arm = upper @ arm_abduct @ _axis_rotation(right, a[f"sh_{s}"]) @ down
        j[f"{s}_elbow"] = j[f"{s}_shoulder"] + length[f"{s}_elbow"] * arm
        # The elbow bends towards the front of the upper arm (upwards once the arm is raised), turned
        # by ``erot`` towards the body's midline (hands on hips, arms crossed).
        base = upper @ up if arm @ (upper @ up) > -0.3 else upper @ forward
        e = np.deg2rad(a[f"erot_{s}"])
        toward = np.cos(e) * base - np.sin(e) * shoulder_out
        if np.linalg.norm(toward - (toward @ arm) * arm) < 1e-3:
            toward = upper @ forward + 0.5 * (upper @ up)
        j[f"{s}_wrist"] = j[f"{s}_elbow"] + length[f"{s}_wrist"] * _bend(arm, toward, a[f"elb_{s}"])
    return np.stack([j[name] for name in JOINT_NAMES])


def _rotation_y(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _project(camera: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Camera-frame points (mm, ``(..., 3)``) to pixels of the crop whose intrinsics are ``camera``
    (fx, fy, cx, cy)."""
    return camera[:2] * points[..., :2] / points[..., 2:3] + camera[2:]


def place(
    body: np.ndarray, style: DomainStyle, rng: np.random.Generator, crop_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put a body-frame pose in front of a camera and cut a person-centred square crop.

    Returns camera-frame joints (mm), the crop intrinsics and the joints' pixels in the crop.
    """
    elevation = rng.uniform(*style.camera_elevation_deg)
    # A camera above the person looks down: seen from it, the body tips away about x, the head nearer
    # than the feet (y down, z forward). Renderer v3 tipped it the other way, so its cameras looked up.
    rotated = body @ (_rotation_x(elevation) @ _rotation_y(rng.uniform(-180, 180))).T
    root = np.array([rng.uniform(-600, 600), rng.uniform(-300, 300), rng.uniform(*style.camera_distance_mm)])
    joints = rotated + root
    f = 1000.0  # a full-frame camera with its principal point at 0; only the crop is rendered
    uv = f * joints[:, :2] / joints[:, 2:3]
    centre = (uv.min(0) + uv.max(0)) / 2 + rng.normal(0, 0.03, 2) * np.ptp(uv, 0).max()
    side = np.ptp(uv, 0).max() * rng.uniform(1.15, 1.35)
    scale = crop_size / side
    edge = centre - side / 2  # the crop's left/top edge in full-frame pixels
    camera = np.array([f * scale, f * scale, -edge[0] * scale - 0.5, -edge[1] * scale - 0.5])
    pixels = _project(camera, joints)
    return joints, camera, pixels


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


def _background(rng: np.random.Generator, size: int, style: DomainStyle) -> np.ndarray:
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
    parts = [(joints[[_JOINT["thorax"], _JOINT["pelvis"]], 2].mean(), "torso", None)]
    for parent, child in BONES:
        name = JOINT_NAMES[child]
        kind = {"knee": "thigh", "ankle": "shin", "elbow": "upper_arm", "wrist": "forearm"}.get(name[2:])
        if kind is None and name != "neck_nose":
            continue
        parts.append(((joints[parent, 2] + joints[child, 2]) / 2, kind or "neck", (parent, child)))
    parts.append((joints[_JOINT["head"], 2], "head", None))
    parts.sort(key=lambda part: -part[0])
    if feet:
        for s in "lr":
            knee, ankle = _JOINT[f"{s}_knee"], _JOINT[f"{s}_ankle"]
            parts.append((joints[ankle, 2] + 1.0, "foot", (knee, ankle)))
        parts.sort(key=lambda part: -part[0])
    return parts


def _back_shows(joints: np.ndarray, to_camera: tuple) -> bool:
    """Whether the camera, ``to_camera`` from the head (a unit vector, camera frame), sees the body's
    back: then the back of the head is hair."""
    shoulders = joints[_JOINT["r_shoulder"]] - joints[_JOINT["l_shoulder"]]
    facing = np.cross(joints[_JOINT["thorax"]] - joints[_JOINT["pelvis"]], shoulders)
    return float(facing @ np.array(to_camera)) < -0.3 * float(np.linalg.norm(facing))


def _toe(joints: np.ndarray, bone: tuple[int, int], length: float) -> tuple[float, float, float]:
    """The toe of the foot at ``bone``'s (knee, ankle) ankle, ``length`` mm from it: forward (horizontal, at
    right angles to the hips) and a little down, at right angles to the shin: flat when standing, toes
    down when kneeling."""
    right = joints[_JOINT["r_hip"]] - joints[_JOINT["l_hip"]]
    gx, gz = -right[2], right[0]  # (0, -1, 0) x right
    knee, ankle = (tuple(joints[j].tolist()) for j in bone)
    sx, sy, sz = _unit(ankle[0] - knee[0], ankle[1] - knee[1], ankle[2] - knee[2])
    tx, ty, tz = _unit(gx, 0.0, gz)
    ty += 0.3
    k = tx * sx + ty * sy + tz * sz
    tx, ty, tz = _unit(tx - k * sx, ty - k * sy, tz - k * sz)
    return (ankle[0] + length * tx, ankle[1] + length * ty, ankle[2] + length * tz)


def _draw_flat(img: np.ndarray, joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict,
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
            h = _JOINT["head"]
            radius = 100 * subject["scale"] * px_per_mm[h]
            centre = (pixels[h] + pixels[_JOINT["neck_nose"]]) / 2
            back = style.facing_cues and _back_shows(joints, _unit(*(-joints[h]).tolist()))
            cv2.circle(img, _fixed(centre), int(radius * 16), hair if back else skin, -1, cv2.LINE_AA, 4)
            if not back:
                cv2.circle(img, _fixed(pixels[h]), int(radius * 10), hair, -1, cv2.LINE_AA, 4)
        elif kind == "foot":
            toe = np.array(_toe(joints, bone, 170 * subject["scale"]))
            toe_px = _project(camera, toe)
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
        lj, rj = joints[_JOINT[left]], joints[_JOINT[right]]
        out = (lj - rj) / max(float(np.linalg.norm(lj - rj)), 1e-6) * reach
        corners.append((lj + out, rj - out))
    (ls, rs), (lh, rh) = corners
    return [tuple(p) for p in _project(camera, np.stack([ls, rs, rh, lh])).tolist()]


def _draw_lit(img: np.ndarray, joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict,
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
    pelvis, thorax = P[_JOINT["pelvis"]], P[_JOINT["thorax"]]
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
            canvas.limb(lo, hi, J[_JOINT["pelvis"]], J[_JOINT["thorax"]], depth_px, _TOP, shade_width=breadth)
        elif kind == "head":
            h = _JOINT["head"]
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
            toe_px = tuple(_project(camera, np.array(toe)).tolist())
            foot_w = _LIMB_WIDTH_MM["foot"] * width * px_per_mm[bone[1]]
            canvas.limb(P[bone[1]], toe_px, ankle, toe, foot_w, _SHOES)
        else:
            p, c = bone
            w = _LIMB_WIDTH_MM[kind] * width * (px_per_mm[p] + px_per_mm[c]) / 2
            canvas.limb(P[p], P[c], J[p], J[c], w, labels[kind])
    return canvas.composite(img, plain, cloth)


def _action(style: DomainStyle, rng: np.random.Generator) -> str:
    """An action drawn by the domain's ``action_weights``."""
    weights = np.asarray(style.action_weights, dtype=np.float64)
    return ACTIONS[int(rng.choice(len(ACTIONS), p=weights / weights.sum()))]


def bystander(joints: np.ndarray, camera: np.ndarray, style: DomainStyle, split: str,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:  # fmt: skip
    """Another person of the split, 0.5-1.2 m to one side of ``joints`` and 0.3-2.5 m behind them,
    seen by the same crop camera: ``(joints, pixels, subject)``; they may be partly outside the crop."""
    subject = _subject(int(rng.choice(style.subjects[split])))
    action = _action(style, rng)
    body = pose(action, subject, rng) @ _rotation_y(rng.uniform(-180, 180)).T
    side = rng.choice((-1.0, 1.0)) * rng.uniform(500, 1200)
    other = body + joints[0] + np.array([side, rng.uniform(-100, 100), rng.uniform(300, 2500)])
    pixels = _project(camera, other)
    return other, pixels, subject


def render(joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict, style: DomainStyle,
           rng: np.random.Generator, size: int, others: tuple = ()) -> np.ndarray:  # fmt: skip
    """Draw the person over a background (behind them ``others``, ``(joints, pixels, subject)`` each, lit
    bodies only), far parts first, then the domain's camera effects."""
    img = _background(rng, size, style)
    # Drawn only where set, so that other frames keep their draws.
    flesh = [rng.uniform(*style.flesh_mm) if any(style.flesh_mm) else 0.0 for _ in range(len(others) + 1)]
    if style.lit_bodies:
        for (other_joints, other_pixels, other_subject), reach in zip(others, flesh):
            img = _draw_lit(img, other_joints, camera, other_pixels, other_subject, rng, reach)
        img = _draw_lit(img, joints, camera, pixels, subject, rng, flesh[-1])
    else:
        _draw_flat(img, joints, camera, pixels, subject, style, rng, flesh[-1])
    if style.colour_cast:
        img = np.clip(img * (1 + rng.uniform(-style.colour_cast, style.colour_cast, 3)), 0, 255).astype(
            np.uint8
        )
    if style.contrast != (1.0, 1.0):  # drawn only where set, so that other frames keep their draws
        img = np.clip((img - 127.5) * rng.uniform(*style.contrast) + 127.5, 0, 255).astype(np.uint8)
    blur = rng.uniform(*style.blur_sigma)
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise = rng.uniform(*style.noise_std)
    if noise > 0:
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
    return img


def render_frame(
    domain: str, split: str, index: int, seed: int = 0, crop_size: int = 128, style: DomainStyle | None = None
) -> dict:
    """Frame ``index`` of a domain's split, as a schema-v1 row.

    ``style`` renders the frame's random draws in another ``DomainStyle`` than the domain's own: with
    ``dataclasses.replace(STYLES[domain], ...)`` the frames differ from the domain's only where the
    replaced fields act (``benchmarks/looks_and_geometry.py`` takes the gap apart so)."""
    if domain not in STYLES:
        raise ValueError(f"unknown synthetic domain {domain!r}; choose from {DOMAINS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    style = style or STYLES[domain]
    rng = np.random.default_rng([seed, DOMAINS.index(domain), SPLITS.index(split), index])
    number = int(rng.choice(style.subjects[split]))
    subject = _subject(number)
    action = _action(style, rng)
    joints, camera, pixels = place(pose(action, subject, rng), style, rng, crop_size)
    others = ()
    if style.bystander_probability and rng.random() < style.bystander_probability:
        others = (bystander(joints, camera, style, split, rng),)
    image = render(joints, camera, pixels, subject, style, rng, crop_size, others)
    return {
        "frame_id": f"{domain}/{split}/{seed}/{index:07d}",
        "image": encode_image(image),
        "joints_2d": pixels.astype(np.float32),
        "joints_3d": joints.astype(np.float32),
        "camera": camera.astype(np.float32),
        "subject": f"S{number:02d}",
        "action": action,
    }


def _render_range(spec: tuple[str, str, int, int, int, int, DomainStyle | None]) -> list[dict]:
    domain, split, start, n, seed, crop_size, style = spec
    return [render_frame(domain, split, index, seed, crop_size, style) for index in range(start, start + n)]


def generate(
    domain: str,
    split: str,
    n: int,
    seed: int = 0,
    crop_size: int = 128,
    start: int = 0,
    workers: int = 1,
    style: DomainStyle | None = None,
) -> Iterator[dict]:
    """Frames ``start .. start + n - 1`` of a domain's split, in order, rendered by ``workers`` processes
    (in ``style``, if given: ``render_frame``)."""
    chunk = 256 if workers > 1 else 1
    specs = [
        (domain, split, i, min(chunk, start + n - i), seed, crop_size, style)
        for i in range(start, start + n, chunk)
    ]
    if workers <= 1:
        for spec in specs:
            yield from _render_range(spec)
        return
    with ProcessPoolExecutor(workers) as pool:
        for rows in pool.map(_render_range, specs):
            yield from rows
