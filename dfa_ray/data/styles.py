"""What sets a synthetic domain apart (``DomainStyle``): who is filmed and how they move, where the
camera is, and how the frames look. ``synthetic.STYLES`` holds the two domains' styles; the pose
prior (``poses``) and the drawing (``drawing``) read the fields that concern them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainStyle:
    """What distinguishes a domain: who is in it, how they move, where the camera is, how it looks."""

    subjects: dict[str, tuple[int, ...]]  # split -> subject numbers
    action_weights: tuple[float, ...]  # over poses.ACTIONS
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
