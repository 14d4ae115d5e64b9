import dataclasses
from fnmatch import fnmatch
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfa_ray.data import drawing, poses
from dfa_ray.data import synthetic as syn
from dfa_ray.data.images import decode_image
from dfa_ray.method.skeleton import JOINT_NAMES
from tests.helpers import project


def test_frames_are_a_pure_function_of_domain_split_index_and_seed():
    a = syn.render_frame("synthetic-real", "train", 5, seed=1)
    b = syn.render_frame("synthetic-real", "train", 5, seed=1)
    c = syn.render_frame("synthetic-real", "train", 6, seed=1)
    assert a["image"] == b["image"] and np.array_equal(a["joints_3d"], b["joints_3d"])
    assert a["image"] != c["image"]
    assert [r["frame_id"] for r in syn.generate("synthetic-source", "test", 2, start=3)] == [
        "synthetic-source/test/0/0000003",
        "synthetic-source/test/0/0000004",
    ]


@pytest.mark.parametrize("domain", syn.DOMAINS)
def test_rows_follow_the_schema_and_joints_2d_is_the_projection(domain):
    for row in syn.generate(domain, "train", 20, crop_size=96):
        image = decode_image(row["image"])
        assert image.shape == (96, 96, 3)
        assert row["joints_2d"].shape == (17, 2) and row["joints_3d"].shape == (17, 3)
        pixels = project(row["joints_3d"][None].astype(np.float64), row["camera"][None].astype(np.float64))[0]
        np.testing.assert_allclose(row["joints_2d"], pixels, atol=1e-2)
        assert np.all((row["joints_2d"] > -1) & (row["joints_2d"] < 96))  # the person is inside the crop
        assert row["action"] in poses.ACTIONS


def test_bone_lengths_are_human_and_stable_per_subject():
    rows = list(syn.generate("synthetic-source", "train", 200))
    shin = JOINT_NAMES.index("r_ankle"), JOINT_NAMES.index("r_knee")
    lengths = {}
    for row in rows:
        j = row["joints_3d"].astype(np.float64)
        lengths.setdefault(row["subject"], []).append(np.linalg.norm(j[shin[0]] - j[shin[1]]))
        reach = np.linalg.norm(j - j[0], axis=1).max()
        assert 500 < reach < 1250  # ankles reach ~1.1 m from the pelvis
    for values in lengths.values():
        assert np.ptp(values) < 0.5 and 350 < values[0] < 520  # one body per subject
    assert len({round(v[0]) for v in lengths.values()}) > 1  # subjects differ


def test_train_and_test_subjects_are_disjoint_and_domains_differ():
    for domain in syn.DOMAINS:
        train = {r["subject"] for r in syn.generate(domain, "train", 60)}
        test = {r["subject"] for r in syn.generate(domain, "test", 30)}
        assert train and test and not train & test
    source = {r["subject"] for r in syn.generate("synthetic-source", "train", 60)}
    real = {r["subject"] for r in syn.generate("synthetic-real", "train", 60)}
    assert not source & real


def test_a_colour_histogram_tells_the_domains_apart():
    # The source now sits on photos, so it is as busy as the target's rooms; the domains must still look
    # different. Nearest centroid on coarse RGB histograms, fitted on 60 frames per domain, tested on 60.
    def features(domain):
        images = [decode_image(r["image"]) for r in syn.generate(domain, "train", 120)]
        hists = [cv2.calcHist([i], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel() for i in images]
        return np.sqrt(np.array(hists) / images[0].shape[0] ** 2)

    data = {domain: features(domain) for domain in syn.DOMAINS}
    centroids = np.stack([data[d][:60].mean(0) for d in syn.DOMAINS])
    for k, domain in enumerate(syn.DOMAINS):
        nearest = np.linalg.norm(data[domain][60:, None] - centroids[None], axis=2).argmin(1)
        assert (nearest == k).mean() > 0.8, domain


def test_unknown_domain_and_split_are_named():
    with pytest.raises(ValueError, match="unknown synthetic domain 'h36m'"):
        syn.render_frame("h36m", "train", 0)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        syn.render_frame("synthetic-real", "val", 0)


def test_outlines_keep_a_limb_visible_over_a_part_of_its_own_colour():
    # A flat limb over the torso in the same colour vanishes; its rim must not (source frames are learnable).
    colour = [120, 60, 200]
    p, q = np.array([20.0, 32.0]), np.array([44.0, 32.0])
    flat, outlined = np.full((64, 64, 3), colour, np.uint8), np.full((64, 64, 3), colour, np.uint8)
    drawing._limb(flat, p, q, 8, colour, shaded=False, outlined=False)
    drawing._limb(outlined, p, q, 8, colour, shaded=False, outlined=True)
    assert np.all(flat == colour)
    assert np.abs(outlined.astype(int) - colour).max() > 40


BACKGROUNDS = Path(syn.__file__).parent / "backgrounds"
LICENCES = {"CC0-1.0", "public domain", "Apache-2.0 AND BSD-3-Clause"}


def test_sources_list_every_committed_photo_with_origin_and_a_permissive_licence():
    rows = drawing.photo_sources()
    files = sorted(p.name for p in BACKGROUNDS.iterdir() if p.suffix == ".jpg")
    assert sorted(r["file"] for r in rows) == files and 15 <= len(files) <= 40
    for row in rows:
        assert row["pool"] in ("source", "target") and row["licence"] in LICENCES, row
        assert row["package"] and row["version"] and row["path"], row
    assert sum(p.stat().st_size for p in BACKGROUNDS.iterdir()) < 3_000_000
    # Both pools are used, and no photo is in both (the target must not show source backgrounds).
    pools = {pool: {r["file"] for r in rows if r["pool"] == pool} for pool in ("source", "target")}
    assert pools["source"] and pools["target"] and not pools["source"] & pools["target"]
    assert len(pools["source"]) > 3 * len(pools["target"])


def test_background_photos_are_package_data_and_decode_to_photographs():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(syn.__file__).parents[2] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["dfa_ray.data"]
    for path in BACKGROUNDS.iterdir():
        assert any(fnmatch(f"backgrounds/{path.name}", p) for p in patterns), path.name
    for pool in ("source", "target"):
        photos = drawing.background_photos(pool)
        assert len(photos) == sum(r["pool"] == pool for r in drawing.photo_sources())
        for photo in photos:
            assert photo.dtype == np.uint8 and photo.ndim == 3 and min(photo.shape[:2]) == 256
            assert photo.std() > 20  # not a flat colour


def test_source_backgrounds_are_crops_of_the_source_photos(monkeypatch):
    # Swap each pool for one marker photo: a green source pool, a magenta target pool. Source frames
    # whose corners are green show the photos; the target's frames never ask for the source pool.
    asked = []
    markers = {"source": (10, 200, 10), "target": (200, 10, 200)}

    def pool(name):
        asked.append(name)
        photo = np.empty((256, 320, 3), np.uint8)
        photo[:] = markers[name]
        return ((photo, photo[::2, ::2].copy()),)

    monkeypatch.setattr(drawing, "_photo_pool", pool)
    rows = list(syn.generate("synthetic-source", "train", 60))
    corners = np.array([decode_image(r["image"])[:4, :4].reshape(-1, 3).mean(0) for r in rows])
    green = (corners[:, 1] > 3 * corners[:, 0]) & (corners[:, 1] > 3 * corners[:, 2])
    assert 0.7 < green.mean() < 0.97  # 85 % photos, the rest plain or noisy colour
    assert set(asked) == {"source"}
    asked.clear()
    list(syn.generate("synthetic-real", "train", 60))
    assert set(asked) == {"target"}  # framed pictures in half of the rooms


def test_source_frames_show_a_photo_behind_the_person(monkeypatch):
    # With the real photos: every pixel the person leaves uncovered is the photo crop, and those crops
    # look like photographs: varied (unlike a plain background) yet smooth between neighbouring pixels
    # (unlike a noise background).
    crops = []

    def photo(*args):
        crops.append(real(*args))
        return crops[-1]

    real = drawing._photo
    monkeypatch.setattr(drawing, "_photo", photo)
    photographic = []
    for index in range(40):
        crops.clear()
        frame = decode_image(syn.render_frame("synthetic-source", "train", index)["image"])
        if not crops:
            continue
        assert np.all(frame == crops[0], axis=2).mean() > 0.4
        grey = crops[0].astype(np.float64).mean(2)
        neighbours = np.corrcoef(grey[:, :-1].ravel(), grey[:, 1:].ravel())[0, 1]
        photographic.append(grey.std() > 10 and neighbours > 0.6)
    assert len(photographic) >= 28 and np.mean(photographic) > 0.85


@pytest.mark.parametrize("action", poses.ACTIONS)
def test_poses_respect_the_joint_limits(action):
    rng = np.random.default_rng(3)
    subject = poses.subject_body(1)
    for _ in range(100):
        angles = poses._action_angles(action, rng)
        for name, value in angles.items():
            low, high = poses.JOINT_LIMITS_DEG[name[:-2] if name[-2:] in ("_l", "_r") else name]
            assert low <= value <= high, (name, value)
        j = poses.pose(action, subject, rng)
        for s in "lr":
            for a, b, c, limit in (("hip", "knee", "ankle", "knee"), ("shoulder", "elbow", "wrist", "elb")):
                upper = j[JOINT_NAMES.index(f"{s}_{b}")] - j[JOINT_NAMES.index(f"{s}_{a}")]
                lower = j[JOINT_NAMES.index(f"{s}_{c}")] - j[JOINT_NAMES.index(f"{s}_{b}")]
                cosine = upper @ lower / np.linalg.norm(upper) / np.linalg.norm(lower)
                flexion = np.degrees(np.arccos(np.clip(cosine, -1, 1)))
                assert flexion <= poses.JOINT_LIMITS_DEG[limit][1] + 1e-6, (action, b, flexion)
        reach = np.linalg.norm(j, axis=1).max()
        assert reach < 1250, (action, reach)  # ankles ~1.1 m from the pelvis; raised hands a little more
        # Knees bend backwards, never hyperextend: the shin turns from the thigh about the body's left-right
        # axis (x in the body frame), in the direction that brings the heel to the buttock.
        for s in "lr":
            hip, knee, ankle = (j[JOINT_NAMES.index(f"{s}_{n}")] for n in ("hip", "knee", "ankle"))
            assert np.cross(knee - hip, ankle - knee)[0] >= -1e-6, (action, s)


def test_walking_couples_left_and_right_and_arms_against_legs():
    rng = np.random.default_rng(0)
    angles = [poses._action_angles("walking", rng) for _ in range(300)]
    hip_l, hip_r, sh_l = (np.array([a[k] for a in angles]) for k in ("hip_l", "hip_r", "sh_l"))
    assert np.corrcoef(hip_l, hip_r)[0, 1] < -0.9
    assert np.corrcoef(hip_l, sh_l)[0, 1] < -0.8


def test_every_action_keeps_the_person_inside_the_crop():
    rng = np.random.default_rng(1)
    style = syn.STYLES["synthetic-source"]
    for action in poses.ACTIONS:
        for number in (1, 8):
            body = poses.pose(action, poses.subject_body(number), rng)
            joints, camera, pixels = poses.place(body, style, rng, 64)
            assert np.all((pixels > -1) & (pixels < 64)), action
    counts = {}
    for row in syn.generate("synthetic-source", "train", 280):
        counts[row["action"]] = counts.get(row["action"], 0) + 1
    assert set(counts) == set(poses.ACTIONS)  # the source draws every action


@pytest.mark.parametrize("elevation, head_nearer", [(30.0, True), (-30.0, False)])
def test_a_camera_above_the_person_looks_down_on_them(monkeypatch, elevation, head_nearer):
    """Positive elevation is a camera above, as real rigs (Human3.6M, a phone held high) mostly are:
    the head is nearer to it than the ankles; below it, the other way round."""
    style = syn.STYLES["synthetic-real"]
    monkeypatch.setitem(
        syn.STYLES, "synthetic-real", dataclasses.replace(style, camera_elevation_deg=(elevation, elevation))
    )
    joints = np.stack([row["joints_3d"] for row in syn.generate("synthetic-real", "test", 40, crop_size=32)])
    head, ankles = JOINT_NAMES.index("head"), [JOINT_NAMES.index(n) for n in ("l_ankle", "r_ankle")]
    depth_difference = joints[:, ankles, 2].mean(axis=1) - joints[:, head, 2]
    assert np.median(depth_difference) > 400 if head_nearer else np.median(depth_difference) < -400


def test_a_bystander_stands_behind_and_beside_the_person_and_leaves_the_labels_exact(monkeypatch):
    """Real crops of several people show parts of the others; the source draws one behind the person
    in half its frames, and the labels stay those of the person the crop is about."""
    rng = np.random.default_rng(0)
    style = syn.STYLES["synthetic-source"]
    for _ in range(20):
        joints, camera, _ = poses.place(poses.pose("walking", poses.subject_body(1), rng), style, rng, 64)
        other, pixels, _ = syn.bystander(joints, camera, style, "train", rng)
        offset = other[0] - joints[0]
        assert 500 <= abs(offset[0]) <= 1200 and 300 <= offset[2] <= 2500
        np.testing.assert_allclose(pixels, project(other[None], camera[None])[0], atol=1e-6)
    plain = dataclasses.replace(style, bystander_probability=0.0)
    crowded = dataclasses.replace(style, bystander_probability=1.0)
    monkeypatch.setitem(syn.STYLES, "synthetic-source", plain)
    alone = list(syn.generate("synthetic-source", "train", 30, crop_size=64))
    monkeypatch.setitem(syn.STYLES, "synthetic-source", crowded)
    with_others = list(syn.generate("synthetic-source", "train", 30, crop_size=64))
    for row in with_others:
        pixels = project(row["joints_3d"][None].astype(np.float64), row["camera"][None].astype(np.float64))[0]
        np.testing.assert_allclose(row["joints_2d"], pixels, atol=1e-2)
    # The bystander is drawn: the frames differ from those without, beyond the person's own pixels.
    assert sum(a["image"] != b["image"] for a, b in zip(alone, with_others)) == 30


def test_a_bystander_without_lit_bodies_is_refused():
    with pytest.raises(ValueError, match="bystander_probability needs lit_bodies"):
        dataclasses.replace(syn.STYLES["synthetic-real"], bystander_probability=0.5)


def test_a_frame_rendered_in_another_style_keeps_its_people_poses_and_camera():
    """``style`` changes what the replaced fields draw and nothing else: a looks-only swap keeps every
    label exactly (a frame's geometry is drawn before its looks), the domain's own style is the default."""
    target = syn.STYLES["synthetic-real"]
    lit = dataclasses.replace(target, lit_bodies=True, shaded=False)
    for index in range(5):
        plain = syn.render_frame("synthetic-real", "test", index)
        assert syn.render_frame("synthetic-real", "test", index, style=target)["image"] == plain["image"]
        other = syn.render_frame("synthetic-real", "test", index, style=lit)
        assert other["image"] != plain["image"]
        for key in ("joints_3d", "joints_2d", "camera"):
            assert np.array_equal(other[key], plain[key]), key
        assert (other["subject"], other["action"]) == (plain["subject"], plain["action"])
    rows = list(syn.generate("synthetic-real", "test", 3, style=lit, workers=2))
    assert [r["image"] for r in rows] == [syn.render_frame("synthetic-real", "test", i, style=lit)["image"]
                                          for i in range(3)]  # fmt: skip


def test_a_lower_contrast_flattens_the_frame_about_mid_grey_and_keeps_the_rest():
    """``contrast`` below 1 pulls every pixel towards mid-grey by the frame's factor, after the colour
    cast and before blur and noise; it is drawn only where set, so frames without it are unchanged."""
    plain = dataclasses.replace(syn.STYLES["synthetic-source"], bystander_probability=0.0)
    flat = dataclasses.replace(plain, contrast=(0.4, 0.4))
    for index in range(3):
        a = syn.render_frame("synthetic-source", "train", index, style=plain)
        b = syn.render_frame("synthetic-source", "train", index, style=flat)
        image_a, image_b = (decode_image(r["image"]).astype(float) for r in (a, b))
        np.testing.assert_allclose(image_b, np.clip((image_a - 127.5) * 0.4 + 127.5, 0, 255), atol=1.0)
        assert np.array_equal(a["joints_3d"], b["joints_3d"])
    with pytest.raises(ValueError, match="contrast"):
        dataclasses.replace(plain, contrast=(0.0, 0.5))


def test_flesh_broadens_the_torso_beyond_the_joints():
    """``flesh_mm`` moves the torso's outline out along the hips' line (the shoulders 0.4 as far), so
    the torso covers more of the frame; (0, 0), the domains' own, draws it between the joints."""
    subject, rng = poses.subject_body(1), np.random.default_rng(5)
    style = syn.STYLES["synthetic-source"]
    joints, camera, pixels = poses.place(poses.pose("standing", subject, rng), style, rng, 256)
    order = [JOINT_NAMES.index(n) for n in ("l_shoulder", "r_shoulder", "r_hip", "l_hip")]
    np.testing.assert_allclose(drawing._torso_corners(joints, camera, 0.0), pixels[order], atol=1e-9)
    broad = np.array(drawing._torso_corners(joints, camera, 100.0))
    assert np.linalg.norm(broad[3] - broad[2]) > np.linalg.norm(pixels[order[3]] - pixels[order[2]]) * 1.5
    hips_mm, shoulders_mm = (np.linalg.norm(joints[a] - joints[b]) for a, b in (order[2:], order[:2]))
    widening = [np.linalg.norm(broad[i] - broad[j]) / np.linalg.norm(pixels[order[i]] - pixels[order[j]])
                for i, j in ((3, 2), (0, 1))]  # fmt: skip
    np.testing.assert_allclose(widening, [1 + 200 / hips_mm, 1 + 80 / shoulders_mm], rtol=0.05)

    def person_pixels(flesh: float) -> int:
        img = np.zeros((256, 256, 3), np.uint8)  # black: the person is what is not black after drawing
        drawn = drawing.draw_lit(img, joints, camera, pixels, subject, np.random.default_rng(0), flesh)
        return int((drawn.max(axis=2) > 0).sum())

    assert person_pixels(100.0) > person_pixels(0.0) + 250  # 505 more here, the arms hiding some
    with pytest.raises(ValueError, match="flesh_mm must be a range"):
        dataclasses.replace(style, flesh_mm=(50.0, 20.0))
    flat = syn.STYLES["synthetic-real"]
    fleshed = dataclasses.replace(flat, flesh_mm=(100.0, 100.0), blur_sigma=(0, 0), noise_std=(0, 0))
    flat = dataclasses.replace(flat, blur_sigma=(0, 0), noise_std=(0, 0))
    for index in range(3):  # the flat renderer's torso too; same people, poses and camera
        a, b = (syn.render_frame("synthetic-real", "train", index, style=st) for st in (flat, fleshed))
        assert np.array_equal(a["joints_2d"], b["joints_2d"]) and a["image"] != b["image"]


def test_facing_cues_draw_the_back_of_the_head_as_hair_and_shoes_below_the_ankles():
    """A flat body shows which way it faces only with ``facing_cues``: its face (skin) or the back of its
    head (hair), and shoes pointing forward; without them front and back are drawn alike."""
    style = syn.STYLES["synthetic-real"]
    cues = dataclasses.replace(style, facing_cues=True, shaded=False)
    subject = poses.subject_body(11)
    hair = tuple(subject["colours"][3])
    head, nose = JOINT_NAMES.index("head"), JOINT_NAMES.index("neck_nose")
    seen = set()
    rng = np.random.default_rng(3)
    for _ in range(40):
        joints, camera, pixels = poses.place(poses.pose("walking", subject, rng), style, rng, 256)
        back = drawing._back_shows(joints, drawing._unit(*(-joints[head]).tolist()))
        drawn = {}
        for name, s in (("plain", dataclasses.replace(cues, facing_cues=False)), ("cues", cues)):
            drawn[name] = np.zeros((256, 256, 3), np.uint8)
            drawing.draw_flat(drawn[name], joints, camera, pixels, subject, s, rng)
        # The head's disc (centred halfway from the head to the nose): facing away it is hair where the
        # face was skin; facing the camera it is as without the cues.
        radius = 100 * subject["scale"] * camera[0] / joints[head, 2]
        grid = np.stack(np.meshgrid(np.arange(256), np.arange(256)), axis=-1)
        disc = np.hypot(*(grid - (pixels[head] + pixels[nose]) / 2).transpose(2, 0, 1)) < 0.9 * radius
        hair_share = {name: np.all(img[disc] == hair, axis=1).mean() for name, img in drawn.items()}
        if back:
            assert hair_share["cues"] > hair_share["plain"] + 0.2
        else:
            assert np.array_equal(drawn["cues"][disc], drawn["plain"][disc])
        # Shoes: drawn only with the cues, at and beyond the ankles, and nowhere else.
        changed = np.any(drawn["cues"] != drawn["plain"], axis=2)
        ys, xs = np.nonzero(changed)
        nearest = np.argmin(np.hypot(xs[:, None] - pixels[:, 0], ys[:, None] - pixels[:, 1]), axis=1)
        ankles = np.isin(nearest, [JOINT_NAMES.index("l_ankle"), JOINT_NAMES.index("r_ankle")])
        if not back:  # (facing away, the head changes too)
            assert changed.sum() > 50 and ankles.mean() > 0.95
        seen.add(back)
    assert seen == {True, False}
    with pytest.raises(ValueError, match="facing_cues is for flat bodies"):
        dataclasses.replace(syn.STYLES["synthetic-source"], facing_cues=True)


def test_the_source_is_rendered_once_per_configured_style_with_the_same_people(tmp_path):
    """``data.synthetic_source_styles``: one dataset per entry, named by its changes (a cache of one
    style is never read as another's), the same frames and labels in each, drawn differently."""
    from dfa_ray.config import load_config
    from dfa_ray.data.records import read_records
    from dfa_ray.driver import resolve_data

    sizes = ["data.synthetic_source_frames=6", "data.synthetic_target_frames=2",
             "data.synthetic_test_frames=2", "data.synthetic_crop_size=64"]  # fmt: skip
    styles = "data.synthetic_source_styles=[{}, {flesh_mm: [100, 110]}]"
    overrides = [*sizes, f"storage={tmp_path}", styles]
    config = load_config(None, overrides)
    assert config.data.synthetic_source_total == 12
    source, _, _ = resolve_data(config, lambda line: None)
    assert [Path(uri).name.split("-v")[-1] for uri in source] == [
        str(syn.RENDERER_VERSION),
        f"{syn.RENDERER_VERSION}-flesh_mm100-110",
    ]
    plain, fleshed = (read_records(uri).to_pylist() for uri in source)
    assert [r["frame_id"] for r in plain] == [r["frame_id"] for r in fleshed]
    assert all(a["joints_3d"] == b["joints_3d"] for a, b in zip(plain, fleshed))
    assert all(a["image"] != b["image"] for a, b in zip(plain, fleshed))
    style = syn.restyled("synthetic-source", {"flesh_mm": [100, 110]})
    assert (
        fleshed[0]["image"] == syn.render_frame("synthetic-source", "train", 0, 0, 64, style=style)["image"]
    )
