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

People and their poses come from ``poses`` and are drawn by ``drawing``; this module holds the two
domains' styles (``STYLES``, each a ``styles.DomainStyle``) and renders their frames. Frame ``i`` of a
(domain, split, seed) is a pure function of those four values: datasets are reproducible and can be
generated in parallel shards. Subjects are disjoint between the train and test splits, as in
Human3.6M's protocols.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import cv2
import numpy as np

from dfa_ray.data.drawing import background, draw_flat, draw_lit
from dfa_ray.data.images import encode_image
from dfa_ray.data.poses import ACTIONS, place, pose, project, rotation_y, subject_body
from dfa_ray.data.styles import DomainStyle

# Bump when a change alters rendered frames: cached datasets are named after it, so none goes stale.
RENDERER_VERSION = 6
DOMAINS = ("synthetic-source", "synthetic-real")
SPLITS = ("train", "test")


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


def _action(style: DomainStyle, rng: np.random.Generator) -> str:
    """An action drawn by the domain's ``action_weights``."""
    weights = np.asarray(style.action_weights, dtype=np.float64)
    return ACTIONS[int(rng.choice(len(ACTIONS), p=weights / weights.sum()))]


def bystander(joints: np.ndarray, camera: np.ndarray, style: DomainStyle, split: str,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:  # fmt: skip
    """Another person of the split, 0.5-1.2 m to one side of ``joints`` and 0.3-2.5 m behind them,
    seen by the same crop camera: ``(joints, pixels, subject)``; they may be partly outside the crop."""
    subject = subject_body(int(rng.choice(style.subjects[split])))
    action = _action(style, rng)
    body = pose(action, subject, rng) @ rotation_y(rng.uniform(-180, 180)).T
    side = rng.choice((-1.0, 1.0)) * rng.uniform(500, 1200)
    other = body + joints[0] + np.array([side, rng.uniform(-100, 100), rng.uniform(300, 2500)])
    pixels = project(camera, other)
    return other, pixels, subject


def render(joints: np.ndarray, camera: np.ndarray, pixels: np.ndarray, subject: dict, style: DomainStyle,
           rng: np.random.Generator, size: int, others: tuple = ()) -> np.ndarray:  # fmt: skip
    """Draw the person over a background (behind them ``others``, ``(joints, pixels, subject)`` each, lit
    bodies only), far parts first, then the domain's camera effects."""
    img = background(rng, size, style)
    # Drawn only where set, so that other frames keep their draws.
    flesh = [rng.uniform(*style.flesh_mm) if any(style.flesh_mm) else 0.0 for _ in range(len(others) + 1)]
    if style.lit_bodies:
        for (other_joints, other_pixels, other_subject), reach in zip(others, flesh):
            img = draw_lit(img, other_joints, camera, other_pixels, other_subject, rng, reach)
        img = draw_lit(img, joints, camera, pixels, subject, rng, flesh[-1])
    else:
        draw_flat(img, joints, camera, pixels, subject, style, rng, flesh[-1])
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
    subject = subject_body(number)
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
