"""Typed config: YAML + dotted overrides, errors that name the key, and lossless YAML round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfa_ray.cli import build_parser, overrides, parse_config
from dfa_ray.config import Config, ConfigError, differences, from_dict, load_config, load_yaml_text, to_yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name", ["smoke.yaml", "demo.yaml", "paper.yaml", "cc_ssl_views.yaml", "source_model.yaml"]
)
def test_shipped_configs_load_and_round_trip(name):
    config = load_config(REPO / "configs" / name)
    assert from_dict(load_yaml_text(to_yaml(config))) == config


def test_overrides_are_typed_and_applied_after_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 5\nadapt:\n  beta: 0.5\n")
    overrides = ["adapt.beta=2", "label.num_gpus=1", "data.source=[a, 's3://b/c']", "workers.use_gpu=true"]
    config = load_config(path, overrides)
    assert config.rounds == 5 and config.adapt.beta == 2.0 and config.label.num_gpus == 1.0
    assert config.data.source == ("a", "s3://b/c") and config.workers.use_gpu is True
    assert config.adapt.epochs == Config().adapt.epochs  # untouched defaults stay


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["adapt.bta=1"], "unknown key.*adapt.bta"),
        (["label.views=[{kind: equivariance, max_rotation: 3}]"], "unknown key.*label.views.0.max_rotation"),
        (["label.views=[{kind: mirror}]"], "label.views.0: Input tag 'mirror'.*expected tags: 'original'"),
        (["label.views=[]"], "label.views must name at least one view"),
        (["label.views=[{kind: equivariance, min_scale: 0}]"], r"label.views.0.equivariance.min_scale must"),
        (["adapt.augment_ranges.flip_probability=2"], "adapt.augment_ranges.flip_probability must be in"),
        (["data.source_2d_share=1"], r"data.source_2d_share must be in \(0, 1\) or null, got 1.0"),
        (["data.detect_2d_min_found=1.5"], r"data.detect_2d_min_found must be in \[0, 1\] or null, got 1.5"),
        (["data.synthetic_source_styles=[]"], "data.synthetic_source_styles must hold at least one style"),
        (["data.synthetic_source_styles=[{flesh: [4, 9]}]"], "no DomainStyle field 'flesh': expected one of"),
        (
            ["data.synthetic_source_styles=[{}, {flesh_mm: [9, 4]}]"],
            r"\{'flesh_mm': \[9, 4\]\}: flesh_mm must be a range",
        ),
        (["rounds=many"], "rounds: Input should be a valid integer"),
        (["model.block=dense"], "model.block must be one of"),
        (["policy=60%,5%"], "policy must be three"),
        (["rounds"], "must look like section.key=value"),
        (["rounds.x=1"], "rounds: Input should be a valid integer"),
        (["rounds=3", "rounds.x=1"], "'rounds' is a value, not a section"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_differences_lists_dotted_keys_and_skips_ignored_sections():
    a = load_config(None, [])
    b = load_config(None, ["adapt.alpha=3", "ray.num_cpus=8", "adapt.augment_ranges.min_scale=0.7"])
    assert differences(a, b) == ["adapt.alpha", "adapt.augment_ranges.min_scale", "ray.num_cpus"]
    assert differences(a, b, ignore=("ray",)) == ["adapt.alpha", "adapt.augment_ranges.min_scale"]


def test_driver_flags_keep_their_types():
    argv = ["--run-name", "off", "--source", "a", "s3://b/c", "--rounds", "2", "--no-dfa", "--use-gpu"]
    args = build_parser("self_train", "").parse_args([*argv, "--set", "adapt.beta=0.5"])
    config = load_config(None, overrides(args))
    assert config.run_name == "off"  # YAML would read a bare off as False
    assert config.data.source == ("a", "s3://b/c") and config.rounds == 2 and config.adapt.beta == 0.5
    assert not config.adapt.dfa and config.workers.use_gpu and config.label.num_gpus == 1


def test_the_driver_makes_a_local_storage_absolute_for_workers_that_run_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, _ = parse_config("self_train", "", ["--storage", "runs", "--target", "data/real"])
    assert config.storage == str(tmp_path / "runs")
    assert config.data.target == "data/real"  # resolved by the driver and Ray Data, where it stands
    for uri in ("s3://bucket/runs", "file:///srv/runs"):
        assert parse_config("self_train", "", ["--storage", uri])[0].storage == uri
