"""benchmarks/orientation.py: reading a heatmap about its strongest mode instead of over the whole map."""

from __future__ import annotations

import numpy as np
import torch

from dfa_ray.method.heatmaps import Marginals, gaussian_marginals, grid, soft_argmax
from dfa_ray.method.model import PoseModel, predict
from tests.helpers import TINY, load_script

bench = load_script("benchmarks/orientation.py")


def _two_legs(size: int = 16) -> tuple[Marginals, float, float]:
    """One joint's marginals with 60 % of the mass on one leg (x = -0.5) and 40 % on the other (0.5)."""
    strong = gaussian_marginals(torch.tensor([[[-0.5, 0.4, 0.0]]]), size, sigma=1.0)
    weak = gaussian_marginals(torch.tensor([[[0.5, 0.4, 0.0]]]), size, sigma=1.0)
    logits = Marginals(*(torch.log(0.6 * s + 0.4 * w + 1e-12) for s, w in zip(strong, weak)))
    return logits, -0.5, 0.5


def test_the_whole_map_hedges_between_two_modes_and_the_mode_reading_commits_to_the_stronger():
    logits, strong_x, weak_x = _two_legs()
    hedged = soft_argmax(logits)[0][0, 0]
    committed = soft_argmax(bench.around_the_mode(logits, radius=2))[0][0, 0]
    assert abs(hedged[0] - (0.6 * strong_x + 0.4 * weak_x)) < 0.02  # between the legs
    assert abs(committed[0] - strong_x) < 0.02  # on the stronger leg
    assert abs(committed[1] - 0.4) < 0.02 and abs(committed[2]) < 0.02


def test_a_window_covering_the_map_is_the_whole_maps_reading():
    logits, _, _ = _two_legs()
    assert torch.allclose(soft_argmax(bench.around_the_mode(logits, radius=16))[0], soft_argmax(logits)[0])


def test_radius_zero_reads_the_strongest_cell():
    logits, _, _ = _two_legs()
    cell = grid(16)[torch.argmin((grid(16) + 0.5).abs())]
    assert torch.isclose(soft_argmax(bench.around_the_mode(logits, radius=0))[0][0, 0, 0], cell)


def test_the_mode_reading_without_the_flip_test_is_the_images_own():
    torch.manual_seed(0)
    model = PoseModel(TINY).eval()
    crops = [np.random.default_rng(k).integers(0, 255, (40, 40, 3), np.uint8) for k in range(3)]
    whole = 64  # a window wider than any map: the whole map's reading
    images = np.stack([bench.predict.resize(c, TINY.input_size) for c in crops])
    read = {flip: bench.mode_predictions(model, crops, [whole], flip)[whole] for flip in (False, True)}
    for flip_test, coords in read.items():
        np.testing.assert_allclose(coords, predict(model, images, flip_test)[0], atol=1e-5)
    assert not np.allclose(read[True], read[False], atol=1e-4)
