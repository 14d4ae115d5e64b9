"""Every setting of a self-training run, typed, loaded from YAML with dotted command-line overrides.

``load_config("configs/demo.yaml", ["adapt.beta=0.5", "label.actors=4"])`` reads the file, applies
the overrides (values parsed as YAML, so ``true``, ``3`` and ``[1, 2]`` have their types), and
validates the result against these dataclasses: an unknown key, a wrong type or a value out of
range (``dfa_ray.bounds``: counts >= 1, finite positive learning rates...) is an error that names the
key and the value, every problem on one line. ``to_yaml`` writes the resolved config, which every run
stores next to its results.
GPU use is configuration, never code: ``workers.use_gpu``, ``label.num_gpus``, ``*.amp``,
``label.inference`` (AMP, channels-last, pinned memory, non-blocking copies, compile; ignored on a
CPU), ``experiments.trial_gpus``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

import pydantic
import yaml

from dfa_ray import bounds
from dfa_ray.data import synthetic
from dfa_ray.method.dann import DANNConfig
from dfa_ray.method.fitting import AdaptConfig, TrainConfig
from dfa_ray.method.inference import InferenceConfig
from dfa_ray.method.model import ModelConfig
from dfa_ray.method.policy import Policy
from dfa_ray.method.pseudo_label import Confidence
from dfa_ray.method.views import KINDS, PAPER_VIEWS

# One entry of ``label.views``: a kind of ``dfa_ray.method.views``, named by its ``kind``, with its ranges.
ViewSpec = Annotated[Union[KINDS], pydantic.Field(discriminator="kind")]


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key."""


# run_name is a storage key component (<storage>/<run_name>/...): no "/", no "..", nothing absolute.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class DataConfig:
    """Where frames come from. Empty/None means the embedded synthetic benchmark, generated if absent."""

    source: tuple[str, ...] = ()  # labeled schema-v1 datasets (3D and 2D-only mixed)
    # 2D-only labeled datasets added to the source, whichever it is: the paper's "w/ MPII" setting
    # (MPII, or real frames with machine-made 2D from prepare_data.py video --labels-2d).
    source_2d: tuple[str, ...] = ()
    # About this share of the source frames drawn are source_2d's, which are repeated to make it up
    # (a small real set beside 6,000 rendered frames would be drawn a few times a round). None: in
    # proportion to the frames.
    source_2d_share: float | None = None
    target: str | None = None  # unlabeled (or labeled, labels unused) real frames
    # Where the target's joints_2d are machine-made (a 2D detector's, e.g. prepare_data.py video's
    # MediaPipe), the rounds learn from them: the target joins source_2d, each pseudo-label takes the
    # detector's image position (pseudo_label.anchor_2d), and the rounds train at pretrain.lr, the rate
    # for labels (driver.use_target_2d). Annotated 2D is a label and a target's labels are never used.
    target_2d: bool = True
    # A target without any 2D gets MediaPipe's, found in its crops before the rounds, when MediaPipe
    # finds a person in at least this share of them (a detector that misses more does not know the
    # domain: stages.detect); null: never look. Needs target_2d. A target with annotated 2D (renders,
    # a capture) is never searched (driver.detected_target_2d).
    detect_2d_min_found: float | None = 0.8
    test: str | None = None  # target-domain frames with joints_3d, for MPJPE
    synthetic_source_frames: int = 6000
    # The synthetic source: one rendering of synthetic_source_frames frames per entry, the same people
    # and poses, each drawn with these DomainStyle fields changed ({}: as the domain draws them), e.g.
    # [{}, {flesh_mm: [40, 110]}]: torsos between the joints and fuller ones (configs/source_model.yaml).
    synthetic_source_styles: tuple[dict[str, Any], ...] = ({},)
    synthetic_target_frames: int = 4000
    synthetic_test_frames: int = 1000
    synthetic_seed: int = 0
    synthetic_crop_size: int = 128

    @property
    def synthetic_source_total(self) -> int:
        """Frames of the synthetic source, every rendering of it together."""
        return self.synthetic_source_frames * len(self.synthetic_source_styles)

    def __post_init__(self) -> None:
        # An empty split would only fail later, inside a stage, as a dataset without rows.
        bounds.at_least(
            self, 1, "synthetic_source_frames", "synthetic_target_frames", "synthetic_test_frames"
        )
        if not self.synthetic_source_styles:
            raise bounds.FieldError("synthetic_source_styles", "must hold at least one style ({}: as drawn)")
        for changes in self.synthetic_source_styles:
            try:
                synthetic.restyled("synthetic-source", changes)
            except (TypeError, ValueError) as exc:
                raise bounds.FieldError("synthetic_source_styles", f"{changes!r}: {exc}") from None
        found = self.detect_2d_min_found
        if found is not None and not 0.0 <= found <= 1.0:  # NaN fails this too
            raise bounds.FieldError("detect_2d_min_found", f"must be in [0, 1] or null, got {found!r}")
        share = self.source_2d_share
        if share is not None and not 0.0 < share < 1.0:  # NaN fails this too
            raise bounds.FieldError("source_2d_share", f"must be in (0, 1) or null, got {share!r}")


@dataclass(frozen=True)
class LabelConfig:
    """The Ray Data pseudo-labeling stage: actors running the ensemble of ``views``."""

    actors: int = 2
    batch_size: int = 64
    # Fractional CPUs per actor: at 1 CPU each, two actors take both cores of a 2-core node and the
    # read tasks feeding them never run (a measured deadlock).
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    # CPUs of each task that decodes and resizes images ahead of the actors, so a node's CPUs decode
    # while its GPUs label (the actors receive uint8 crops at the model's input size). None: as the
    # actors' num_cpus, with which Ray fuses decoding into CPU actors (a separate CPU step costs a
    # 2-core machine 0.71x against 0.91x the plain loop's speed) and 1 CPU ahead of GPU actors.
    decode_cpus: float | None = None
    inference: InferenceConfig = InferenceConfig()  # GPU switches of the actors' forward pass
    rows_per_block: int = 256  # small files would otherwise arrive as one block for one actor
    seed: int = 0  # view sampling is a function of (seed, round, frame_id): reruns give equal labels
    # The ensemble, in order, each entry a kind of ``dfa_ray.method.views`` with its ranges: by default the
    # paper's original, invariance and equivariance views (configs/cc_ssl_views.yaml: CC-SSL's five).
    views: tuple[ViewSpec, ...] = PAPER_VIEWS
    # How each pseudo-label is scored for the policy and weighted in the loss: "facing", the views'
    # agreement on which way the body faces, or "density", CC-SSL's averaged-heatmap peak
    # (``dfa_ray.method.pseudo_label``, where the choice is measured).
    confidence: Confidence = "facing"
    # A frame the labeler cannot use (an undecodable image) is skipped, counted and reported by
    # frame_id. A few such frames are normal in real footage; more than this fraction of a round's
    # frames points at a broken dataset or decoder, and training on the rest would quietly shift
    # the target set, so the round fails instead.
    max_error_fraction: float = 0.01

    @property
    def decode_task_cpus(self) -> float:
        """``decode_cpus``, or its default: the CPU actors' own share, else one CPU per task."""
        if self.decode_cpus is not None:
            return self.decode_cpus
        return 1.0 if self.num_gpus else self.num_cpus

    def __post_init__(self) -> None:
        bounds.at_least(self, 1, "actors", "batch_size", "rows_per_block")
        if not self.views:
            raise bounds.FieldError("views", "must name at least one view")
        bounds.non_negative(self, "num_cpus", "num_gpus")
        if self.decode_cpus is not None:
            bounds.positive(self, "decode_cpus")  # at 0, Ray would start decode tasks without bound
        bounds.fraction(self, "max_error_fraction")


@dataclass(frozen=True)
class WorkersConfig:
    """Ray Train workers for pretraining and adaptation (DDP: gloo on CPU, nccl on GPU)."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5

    def __post_init__(self) -> None:
        bounds.at_least(self, 1, "num_workers")
        bounds.non_negative(self, "cpus_per_worker")


@dataclass(frozen=True)
class RayConfig:
    """How the driver reaches Ray. ``address`` None: the job's cluster, else a new local one."""

    address: str | None = None
    num_cpus: int | None = None  # logical CPUs of a local cluster (None: the machine's)
    # A local cluster's object store. Ray Data reads a record shard as blocks of up to 128 MiB and
    # budgets each stage a share of the store: at 512 MB the read was throttled and the label actors
    # waited for frames (labeling 8,000 frames on 2 cores took ~4 s longer, benchmarks/README.md).
    object_store_mb: int = 2048
    # ray.init tries before the driver gives up. On a loaded machine a local start can miss Ray's own
    # 30 s limit ("The current node timed out during startup": 12 of 15 starts in one probe).
    start_attempts: int = 3

    def __post_init__(self) -> None:
        if self.num_cpus is not None:
            bounds.at_least(self, 1, "num_cpus")
        bounds.at_least(self, 75, "object_store_mb")  # Ray refuses a smaller object store
        bounds.at_least(self, 1, "start_attempts")


@dataclass(frozen=True)
class LeaseConfig:
    """The run's lease (``dfa_ray.ops.lease``): one driver per run. Neither value changes any result."""

    # A lease with no heartbeat for this long may be taken over by another driver: how long a driver
    # restarted on another machine waits after a crash, and, halved, how long a storage outage the
    # holder survives before it gives the run up.
    timeout_s: float = 120.0
    heartbeat_s: float = 15.0

    def __post_init__(self) -> None:
        # The holder must give the run up before anyone may take it over (dfa_ray.ops.lease.RunLease).
        if not 0 < 6 * self.heartbeat_s <= self.timeout_s:
            raise ValueError(
                f"lease.timeout_s ({self.timeout_s}) must be at least 6 x lease.heartbeat_s "
                f"({self.heartbeat_s}), which must be positive"
            )


@dataclass(frozen=True)
class ExperimentsConfig:
    """``jobs/experiments.py``: the seeds, Table 2's policies and how each (method, seed) trial runs."""

    seeds: tuple[int, ...] = (0, 1, 2)
    # Table 2's curriculum policies, each run with DFA; Table 1's self-training rows use ``policy``.
    policies: tuple[str, ...] = ("60%,0%,60%", "80%,0%,80%", "100%,0%,100%", "60%,5%,99%")
    dann: DANNConfig = DANNConfig()
    examples: int = 6  # evenly spaced test frames drawn for the side-by-side skeleton figure
    trial_cpus: float = 1.0  # Ray resources of one trial
    trial_gpus: float = 0.0
    threads: int = 1  # torch threads in a trial
    # "Only target" trains round after round until a held-out tenth of the target frames stops
    # improving (experiments.target_label_rounds), at most this many rounds of adapt.epochs.
    only_target_max_rounds: int = 12

    def __post_init__(self) -> None:
        if not self.seeds:
            raise bounds.FieldError("seeds", "must name at least one seed")
        for text in self.policies:
            try:
                Policy.parse(text)
            except ValueError as exc:
                raise bounds.FieldError("policies", f"{text!r}: {exc}") from None
        bounds.at_least(self, 0, "examples")
        bounds.at_least(self, 1, "threads", "only_target_max_rounds")
        bounds.non_negative(self, "trial_cpus", "trial_gpus")


@dataclass(frozen=True)
class Config:
    """A whole run: ``<storage>/<run_name>/`` holds its config, rounds, checkpoints and metrics."""

    run_name: str = "demo"
    storage: str = "runs"  # local directory or s3://bucket/prefix
    rounds: int = 3
    policy: str = "60%,10%,90%"  # initial, step, maximum fraction of target frames kept
    seed: int = 0
    init_checkpoint: str | None = None  # skip pretraining and start from this model.pt
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    pretrain: TrainConfig = TrainConfig()
    adapt: AdaptConfig = AdaptConfig()
    label: LabelConfig = LabelConfig()
    workers: WorkersConfig = WorkersConfig()
    ray: RayConfig = field(default_factory=RayConfig)
    lease: LeaseConfig = LeaseConfig()
    experiments: ExperimentsConfig = ExperimentsConfig()

    def __post_init__(self) -> None:
        if not isinstance(self.run_name, str) or not _RUN_NAME.fullmatch(self.run_name):
            raise ValueError(
                "run_name must be 1-128 letters, digits, '.', '_' or '-' starting with a letter or digit "
                f"(it names the run's folder in storage), got {self.run_name!r}"
            )
        try:
            Policy.parse(self.policy)  # fail at load time, not in round 1
        except ValueError as exc:
            raise bounds.FieldError("policy", f"{self.policy!r}: {exc}") from None
        bounds.at_least(self, 0, "rounds")
        # A stage of zero epochs reports no checkpoint, which fails the run once Ray has started.
        if not self.init_checkpoint and self.pretrain.epochs < 1:
            raise bounds.FieldError(
                "pretrain.epochs",
                f"must be at least 1 unless init_checkpoint is set, got {self.pretrain.epochs}",
            )
        if self.rounds and self.adapt.epochs < 1:
            raise bounds.FieldError(
                "adapt.epochs", f"must be at least 1 when rounds >= 1, got {self.adapt.epochs}"
            )

    @property
    def policy_schedule(self) -> Policy:
        """The parsed curriculum policy."""
        return Policy.parse(self.policy)


_ADAPTER = pydantic.TypeAdapter(Config)


def _unknown_keys(cls: type, data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``data`` that no field of dataclass ``cls`` (or its nested dataclasses, and the
    entries of its lists of them: ``label.views.2.max_rotation``) has."""
    hints = typing.get_type_hints(cls, include_extras=True)
    unknown = []
    for key, value in data.items():
        if key not in hints:
            unknown.append(prefix + str(key))
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            unknown += _unknown_keys(hints[key], value, f"{prefix}{key}.")
        elif typing.get_origin(hints[key]) is tuple and isinstance(value, list):
            for i, item in enumerate(value):
                entry = _entry_class(typing.get_args(hints[key])[0], item)
                if entry is not None:
                    unknown += _unknown_keys(entry, item, f"{prefix}{key}.{i}.")
    return unknown


def _entry_class(hint: Any, item: Any) -> type | None:
    """The dataclass a list entry validates into: the hint's own, or the member of a union whose
    ``kind`` the entry names (None where the entry is no mapping or names no member: pydantic says
    why)."""
    if not isinstance(item, dict):
        return None
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    members = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    named = [m for m in members if len(members) == 1 or getattr(m, "kind", None) == item.get("kind")]
    return named[0] if named and dataclasses.is_dataclass(named[0]) else None


def from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested dict (as YAML gives) into a Config; errors list every bad key."""
    unknown = _unknown_keys(Config, data)
    if unknown:
        raise ConfigError(f"invalid config: unknown key(s) {', '.join(unknown)}")
    try:
        return _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        # One line, so a driver's single ``error:`` line holds every problem.
        raise ConfigError("invalid config: " + "; ".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Any) -> str:
    """One pydantic error as a phrase naming the whole dotted key and the value it got."""
    key = ".".join(str(part) for part in error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, bounds.FieldError):
        # Raised by a section, which names the field only: the key's section comes from the location.
        return f"{key}.{cause}" if key else str(cause)
    if error["type"] == "value_error":
        return str(cause)  # a __post_init__ message that names its key itself (``model.block ...``)
    return f"{key or '(top level)'}: {error['msg']}, got {error['input']!r}"


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dicts and lists, as YAML writes them."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def to_yaml(config: Config) -> str:
    """The resolved config as YAML (what a run saves as ``config.yaml``)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` overrides in a nested dict (values parsed as YAML)."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from None
    return data


def load_yaml_text(text: str, source: str = "config") -> dict[str, Any]:
    """The mapping a YAML config text holds (empty text: no settings)."""
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{source} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded or {}


def differences(a: Config, b: Config, ignore: Sequence[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (sections in ``ignore`` skipped)."""

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    return [k for k in keys if k.split(".")[0] not in ignore]


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        data = load_yaml_text(text, str(path))
    return from_dict(apply_overrides(data, overrides))


def replace(config: Config, overrides: Sequence[str]) -> Config:
    """A copy of ``config`` with dotted overrides applied (validated like a loaded file)."""
    return from_dict(apply_overrides(to_dict(config), overrides))
