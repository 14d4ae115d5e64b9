"""The people of the synthetic benchmark: who they are, how they stand, and the camera that sees them.

People come from a kinematic skeleton: per-subject bone lengths (height and proportions), joint
angles drawn per action (standing, walking with opposite arm and leg swing, kneeling, lunging, hands on
hips, picking something up, ...) and clipped to per-joint limits (``JOINT_LIMITS_DEG``), a random yaw,
and a perspective camera 3.5-7 m away. ``place`` cuts a square crop centred on the person with exact
crop intrinsics, so a frame's ``joints_2d`` is the projection of its ``joints_3d``.
"""

from __future__ import annotations

import numpy as np

from dfa_ray.data.styles import DomainStyle
from dfa_ray.method.skeleton import JOINT_NAMES, NOMINAL_BONE_MM

JOINT = {name: i for i, name in enumerate(JOINT_NAMES)}  # a joint's row in a (17, 3) pose
ACTIONS = (
    "standing", "walking", "sitting", "waving", "reaching", "squatting", "bending", "kneeling", "lunging",
    "hands_on_hips", "arms_crossed", "looking_around", "picking_up", "stretching",
)  # fmt: skip

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


def subject_body(number: int) -> dict:
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


def rotation_y(degrees: float) -> np.ndarray:
    """The 3x3 rotation by ``degrees`` about the vertical axis (a turn of the body, the yaw)."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rotation_x(degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def project(camera: np.ndarray, points: np.ndarray) -> np.ndarray:
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
    rotated = body @ (_rotation_x(elevation) @ rotation_y(rng.uniform(-180, 180))).T
    root = np.array([rng.uniform(-600, 600), rng.uniform(-300, 300), rng.uniform(*style.camera_distance_mm)])
    joints = rotated + root
    f = 1000.0  # a full-frame camera with its principal point at 0; only the crop is rendered
    uv = f * joints[:, :2] / joints[:, 2:3]
    centre = (uv.min(0) + uv.max(0)) / 2 + rng.normal(0, 0.03, 2) * np.ptp(uv, 0).max()
    side = np.ptp(uv, 0).max() * rng.uniform(1.15, 1.35)
    scale = crop_size / side
    edge = centre - side / 2  # the crop's left/top edge in full-frame pixels
    camera = np.array([f * scale, f * scale, -edge[0] * scale - 0.5, -edge[1] * scale - 0.5])
    pixels = project(camera, joints)
    return joints, camera, pixels
