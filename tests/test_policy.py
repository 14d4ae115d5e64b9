from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from dfa_ray.method.policy import Policy, Selection, num_kept, select

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # the property test is a bonus on top of the seeded permutation test
    given = None


def percent_schedule(initial: int, step: int, maximum: int, rounds: int) -> list[float]:
    # Exact integer-percent arithmetic, converted to float once: the value a user means.
    return [float(Fraction(min(initial + k * step, maximum), 100)) for k in range(rounds)]


def test_paper_policy_round_fractions():
    policy = Policy(0.6, 0.05, 0.99)
    expected = percent_schedule(60, 5, 99, 25)
    assert [policy.fraction(k) for k in range(25)] == expected
    assert expected[:3] == [0.6, 0.65, 0.7] and expected[7:10] == [0.95, 0.99, 0.99]


@pytest.mark.parametrize(
    ("initial", "step", "maximum"), [(10, 10, 100), (70, 10, 100), (20, 10, 95), (10, 5, 90)]
)
def test_round_fractions_carry_no_float_error(initial, step, maximum):
    # Naive float sums miss here, e.g. 0.1 + 2 * 0.1 = 0.30000000000000004 and 0.7 + 0.1 = 0.7999999999999999.
    policy = Policy(initial / 100, step / 100, maximum / 100)
    assert [policy.fraction(k) for k in range(25)] == percent_schedule(initial, step, maximum, 25)


@pytest.mark.parametrize("percent", [100, 60, 80])
def test_constant_policies(percent):
    policy = Policy(percent / 100, 0.0, percent / 100)
    assert [policy.fraction(k) for k in range(25)] == [percent / 100] * 25


def test_fraction_rejects_negative_or_non_integer_rounds():
    policy = Policy(0.6, 0.05, 0.99)
    for k in (-1, 1.5, True):
        with pytest.raises(ValueError, match="round k"):
            policy.fraction(k)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((-0.1, 0.05, 0.99), "initial"),
        ((0.6, -0.05, 0.99), "step"),
        ((0.6, 0.05, 1.5), "maximum.*1.5"),
        ((0.6, float("nan"), 0.99), "step.*nan"),
        ((0.6, 0.05, float("inf")), "maximum.*inf"),
        ((0.8, 0.05, 0.6), r"initial \(0.8\) must not exceed maximum \(0.6\)"),
        ((0.0, 0.1, 0.9), "initial must be above 0: the first round would keep no frame"),
        ((0.0, 0.0, 0.0), "initial must be above 0"),
        (("0.6", 0.05, 0.99), "initial"),
    ],
)
def test_invalid_policies_raise(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        Policy(*args)


@pytest.mark.parametrize("text", ["0.6,0.05,0.99", " 0.6, 0.05 ,0.99 ", "60%,5%,99%", "(60%, 5%, 99%)"])
def test_parse_both_formats(text):
    assert Policy.parse(text) == Policy(0.6, 0.05, 0.99)


def test_parse_and_str_round_trip():
    for policy in (Policy(0.6, 0.05, 0.99), Policy(1.0, 0.0, 1.0), Policy(0.125, 0.025, 0.875)):
        assert Policy.parse(str(policy)) == policy
    assert str(Policy(0.6, 0.05, 0.99)) == "(60%, 5%, 99%)"
    assert str(Policy(0.125, 0.0, 1.0)) == "(12.5%, 0%, 100%)"


@pytest.mark.parametrize("text", ["0.6,0.05", "60%,0.05,99%", "a,b,c", "0.6;0.05;0.99", "", "60%,5%,120%"])
def test_parse_rejects_malformed_text(text):
    with pytest.raises(ValueError):
        Policy.parse(text)


@pytest.mark.parametrize(
    ("frames", "fraction", "expected"),
    [(100, 0.29, 29), (10, 0.6, 6), (100, 0.57, 57), (3, 0.99, 2), (7, 1.0, 7), (7, 0.0, 0), (0, 0.5, 0)],
)
def test_num_kept_is_robust_to_float_error(frames, fraction, expected):
    assert num_kept(frames, fraction) == expected


def test_num_kept_matches_exact_arithmetic_for_percent_schedules():
    for k, fraction in enumerate(percent_schedule(60, 5, 99, 25)):
        percent = min(60 + 5 * k, 99)
        for frames in (1, 7, 10, 99, 100, 1234, 35_000):
            assert num_kept(frames, fraction) == percent * frames // 100


def test_num_kept_rejects_bad_input():
    with pytest.raises(ValueError, match="num_frames"):
        num_kept(-1, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        num_kept(10, 1.2)


def test_selection_keeps_the_most_confident_frames():
    rng = np.random.default_rng(0)
    ids = [f"frame_{i:05d}" for i in range(1000)]
    conf = rng.random(1000)
    result = select(ids, conf, 0.65)
    assert isinstance(result, Selection)
    assert result.num_kept == 650 == int(result.mask.sum())
    assert result.mask.dtype == bool and result.mask.shape == (1000,)
    assert conf[result.mask].min() >= conf[~result.mask].max()
    assert result.threshold == conf[result.mask].min()


def test_ties_are_broken_by_frame_id():
    ids = ["c", "a", "d", "b", "e"]
    conf = [0.5, 0.5, 0.9, 0.5, 0.1]
    result = select(ids, conf, 0.6)  # keep 3: "d", then the two smallest ids among the 0.5s
    assert result.num_kept == 3
    assert {i for i, kept in zip(ids, result.mask, strict=True) if kept} == {"d", "a", "b"}
    assert result.threshold == 0.5


def test_frame_ids_compare_as_strings():
    # "10" < "9" as strings, so it wins the tie.
    result = select([9, 10], [0.5, 0.5], 0.5)
    assert result.mask.tolist() == [False, True]


def test_nothing_kept_gives_infinite_threshold():
    result = select(["a", "b"], [0.3, 0.4], 0.0)
    assert result.num_kept == 0 and not result.mask.any()
    assert result.threshold == math.inf
    empty = select([], [], 0.5)
    assert empty.num_kept == 0 and empty.mask.shape == (0,)


def kept_ids(ids, conf, fraction):
    mask = select(ids, conf, fraction).mask
    return {frame_id for frame_id, kept in zip(ids, mask, strict=True) if kept}


def test_selection_is_stable_under_permutation():
    rng = np.random.default_rng(1)
    ids = np.array([f"s{rng.integers(0, 10**6):06d}_{i}" for i in range(500)])
    conf = rng.integers(0, 4, size=500) / 4  # only four distinct values: ties everywhere
    for fraction in (0.1, 0.37, 0.65, 0.99):
        reference = kept_ids(ids.tolist(), conf, fraction)
        assert len(reference) == num_kept(500, fraction)
        for _ in range(10):
            perm = rng.permutation(500)
            assert kept_ids(ids[perm].tolist(), conf[perm], fraction) == reference


@pytest.mark.skipif(given is None, reason="hypothesis is not installed")
def test_selection_is_stable_under_permutation_property():
    @settings(max_examples=200, deadline=None)
    @given(
        rows=st.lists(
            st.tuples(st.text(min_size=1, max_size=4), st.sampled_from([0.0, 0.25, 0.5, 1.0, -0.0])),
            unique_by=lambda row: row[0],
            max_size=40,
        ),
        fraction=st.floats(0.0, 1.0),
        seed=st.integers(0, 2**32 - 1),
    )
    def check(rows, fraction, seed):
        ids = [frame_id for frame_id, _ in rows]
        conf = np.array([c for _, c in rows])
        perm = np.random.default_rng(seed).permutation(len(rows))
        expected = kept_ids(ids, conf, fraction)
        assert kept_ids([ids[i] for i in perm], conf[perm], fraction) == expected
        assert len(expected) == num_kept(len(rows), fraction)

    check()


def test_select_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        select(["a", "b"], [0.3, float("nan")], 0.5)
    with pytest.raises(ValueError, match=r"frame_ids \(3\) and confidences \(2\)"):
        select(["a", "b", "c"], [0.3, 0.4], 0.5)
    with pytest.raises(ValueError, match="'b' occurs more than once"):
        select(["a", "b", "c", "b"], [0.3, 0.4, 0.5, 0.6], 0.5)
    with pytest.raises(ValueError, match="fraction"):
        select(["a"], [0.3], 1.5)


def test_ids_that_differ_only_by_a_trailing_nul_are_two_frames():
    # numpy's string arrays drop trailing NULs; the property test above found the collision.
    selection = select(["a", "a\x00"], [0.5, 0.25], 0.5)
    assert selection.mask.tolist() == [True, False] and selection.num_kept == 1
