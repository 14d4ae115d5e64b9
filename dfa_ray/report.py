"""The experiment report: figures (matplotlib) and one HTML page that embeds them.

``write_report(results, out)`` takes ``results.json`` of ``jobs/experiments.py`` (nothing else: the
example test frames are inside it) and writes ``index.html`` with these PNGs beside it:

    rounds.png      MPJPE and PA-MPJPE after each round, mean ± std over seeds, per method, and the
                    mean training pose's (a dashed line)
    curriculum.png  confidence histograms per round, kept fraction, and pseudo-label error kept/all
    per_joint.png   final per-joint MPJPE of Table 1's methods (mean ± std over seeds)
    per_action.png  the same per action
    skeletons.png   the paper's Fig. 2: fixed test frames, Only source / w/o DFA / Ours / truth
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dfa_ray import storage  # noqa: E402
from dfa_ray.data.images import decode_image  # noqa: E402
from dfa_ray.experiments import TABLE1, TABLE_HEADER, row_name, table_cells  # noqa: E402
from dfa_ray.method.skeleton import BONES, JOINT_NAMES, NUM_JOINTS  # noqa: E402

# The paper's Table 1 (SURREAL -> Human3.6M, without MPII), MPJPE / PA-MPJPE in mm.
PAPER_TABLE1 = {
    "only-source": (407.4, 242.4),
    "dann": (250.0, 153.5),
    "wo-dfa": (127.1, 87.4),
    "dfa": (100.2, 72.0),
    "only-target": (81.2, 61.6),
}
COLOURS = {
    "only-source": "#7f7f7f",
    "dann": "#9467bd",
    "wo-dfa": "#ff7f0e",
    "dfa": "#1f77b4",
    "only-target": "#2ca02c",
}
# Fig. 2's methods, and the bound beside them: what the network draws when it learns the target's labels.
FIGURE_COLUMNS = ("only-source", "wo-dfa", "dfa", "only-target")
_EXTRA = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")


def _colour(method: str, groups: Mapping[str, list[Mapping]]) -> str:
    """A method's colour, the same in every figure of a report."""
    if method in COLOURS:
        return COLOURS[method]
    others = [m for m in groups if m not in COLOURS]
    return _EXTRA[others.index(method) % len(_EXTRA)]


def by_method(trials: Sequence[Mapping], order: Sequence[str] = ()) -> dict[str, list[Mapping]]:
    """Trials grouped by method (methods in ``order`` first, in that order), each list in seed order."""
    groups: dict[str, list[Mapping]] = {method: [] for method in order}
    for trial in sorted(trials, key=lambda t: t["seed"]):
        groups.setdefault(trial["method"], []).append(trial)
    return {method: trials for method, trials in groups.items() if trials}


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _round_curves(
    ax: plt.Axes, groups: Mapping[str, list[Mapping]], methods: Sequence[str], key: str
) -> None:
    # The mean-pose baseline: the same test frames and source for every trial, so one line.
    baseline = [t["rounds"][-1].get(f"mean_pose_{key}") for ts in groups.values() for t in ts]
    if baseline and baseline[0] is not None:
        ax.axhline(baseline[0], color="black", linestyle="--", linewidth=1, label="Mean pose")
    for method in methods:
        curves = [[r[key] for r in t["rounds"]] for t in groups[method]]
        # "Only target" stops when it stops improving, after a number of rounds each seed decides:
        # a stopped seed's model keeps its last error.
        length = max(map(len, curves))
        values = np.array([curve + curve[-1:] * (length - len(curve)) for curve in curves])
        mean, std = values.mean(0), values.std(0)
        style = {"color": _colour(method, groups), "label": row_name(method)}
        if values.shape[1] == 1:  # a bound, trained once: a horizontal line
            ax.axhline(mean[0], linestyle=":", **style)
            continue
        x = np.arange(values.shape[1])
        ax.plot(x, mean, marker="o", **style)
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15)


def rounds_figure(groups: Mapping[str, list[Mapping]], policies: Sequence[str]) -> bytes:
    """Error after each round (round 0: the pretrained model), mean ± std over seeds: Table 1's
    methods on top, Table 2's policies below, both with the two bounds as dotted lines."""
    bounds = [m for m in ("only-source", "only-target") if m in groups]
    panels = [[m for m in TABLE1 if m in groups], bounds + [m for m in policies if m in groups]]
    figure, axes = plt.subplots(2, 2, figsize=(12, 9), squeeze=False)
    for row, (methods, label) in enumerate(zip(panels, ("Table 1 methods", "Table 2 policies, with DFA"))):
        for ax, (key, title) in zip(axes[row], (("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE"))):
            _round_curves(ax, groups, methods, key)
            ax.set(xlabel="round", ylabel=f"{title} (mm)", title=f"{label}: {title} on target test")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
        axes[row][1].legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    return _png(figure)


def curriculum_figure(groups: Mapping[str, list[Mapping]], method: str = "dfa") -> bytes:
    """Confidence histograms per round of ``method`` (seeds pooled), kept fraction per round of
    every self-training method, and how far ``method``'s pseudo-labels are from the truth."""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    trials = groups[method]
    num_rounds = len(trials[0]["rounds"]) - 1
    palette = plt.get_cmap("viridis")
    for k in range(1, num_rounds + 1):
        stats = [t["rounds"][k]["selection"] for t in trials]
        edges = np.array(stats[0]["confidence_histogram"]["edges"])
        counts = np.sum([s["confidence_histogram"]["counts"] for s in stats], axis=0)
        colour = palette((k - 1) / max(1, num_rounds - 1))
        axes[0].stairs(counts, edges, color=colour, label=f"round {k}")
        threshold = np.mean([s.get("threshold", np.nan) or np.nan for s in stats])
        if np.isfinite(threshold):
            axes[0].axvline(threshold, color=colour, linestyle=":", linewidth=1)
    axes[0].set(
        xlabel="frame confidence", ylabel="frames (all seeds)", title=f"{row_name(method)}: confidence"
    )
    axes[0].legend(fontsize=8)
    for name, group in groups.items():
        if "selection" not in group[0]["rounds"][-1] or name == "wo-dfa":  # wo-dfa: Ours' policy
            continue
        kept = [
            np.mean([t["rounds"][k]["selection"]["fraction"] for t in group])
            for k in range(1, num_rounds + 1)
        ]
        axes[1].plot(
            range(1, num_rounds + 1), kept, marker="o", color=_colour(name, groups), label=row_name(name)
        )
    axes[1].set(xlabel="round", ylabel="fraction kept", title="curriculum policy", ylim=(0, 1.05))
    axes[1].legend(fontsize=8)
    x = np.arange(1, num_rounds + 1)
    for key, label in (("label_mpjpe_all", "all frames"), ("label_mpjpe_kept", "kept frames")):
        values = np.array([[t["rounds"][k]["selection"].get(key) or np.nan for k in x] for t in trials])
        axes[2].errorbar(x, values.mean(0), values.std(0), marker="o", capsize=3, label=label)
    axes[2].set(
        xlabel="round",
        ylabel="pseudo-label MPJPE (mm)",
        title="pseudo-label error (diagnostic, never trained on)",
    )
    axes[2].legend(fontsize=8)
    for ax in axes[1:]:
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes:
        ax.grid(alpha=0.3)
    return _png(figure)


def breakdown_figure(groups: Mapping[str, list[Mapping]], key: str, title: str) -> bytes:
    """Grouped bars of final MPJPE per joint (``key="per_joint"``) or per action, Table 1's methods."""
    methods = [m for m in TABLE1 if m in groups]
    final = {m: [t["rounds"][-1][key] for t in groups[m]] for m in methods}
    # The root joint's error is 0 by the root-relative protocol: a bar of nothing.
    names = [n for n in final[methods[0]][0] if any(e[n]["mpjpe"] for m in methods for e in final[m])]
    figure, ax = plt.subplots(figsize=(min(16, max(8, 0.18 * len(names) * len(methods))), 4.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = np.array([[e[n]["mpjpe"] or np.nan for n in names] for e in final[method]])
        x = np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(
            x,
            values.mean(0),
            width,
            yerr=values.std(0),
            capsize=2,
            color=_colour(method, groups),
            label=row_name(method),
        )
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="MPJPE (mm)", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=len(methods))
    return _png(figure)


def _draw_pose(
    ax: plt.Axes, joints: np.ndarray, colour: str, label: str, truth: np.ndarray | None = None
) -> None:
    """Root-relative camera-frame joints (x right, y down, z away) drawn upright, camera side."""

    def upright(p: np.ndarray) -> np.ndarray:
        p = p - p[0]
        return np.stack([p[:, 0], p[:, 2], -p[:, 1]], axis=1)

    if truth is not None:
        for a, b in BONES:
            ax.plot(*upright(truth)[[a, b]].T, color="#bbbbbb", linewidth=1)
    pose = upright(joints)
    for a, b in BONES:
        side = JOINT_NAMES[b][0]
        ax.plot(*pose[[a, b]].T, color=colour, linewidth=2, linestyle="--" if side == "r" else "-")
    ax.set(xlim=(-900, 900), ylim=(-900, 900), zlim=(-1000, 900))
    ax.set_box_aspect((1, 1, 1.05))
    ax.view_init(elev=12, azim=-72)
    ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])
    ax.set_title(label, fontsize=9)


def skeleton_figure(
    groups: Mapping[str, list[Mapping]], images: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray]
) -> bytes:
    """One row per example test frame: the crop, then Only source, w/o DFA, Ours, Only target (first
    seed) and the ground truth; each prediction is drawn over the truth in grey (right limbs dashed)."""
    columns = [m for m in FIGURE_COLUMNS if m in groups]
    first = {m: groups[m][0]["examples"] for m in columns}
    frame_ids = first[columns[0]]["frame_ids"]
    figure = plt.figure(figsize=(2.6 * (len(columns) + 2), 2.7 * len(frame_ids)))
    width = len(columns) + 2
    for r, frame_id in enumerate(frame_ids):
        ax = figure.add_subplot(len(frame_ids), width, r * width + 1)
        ax.imshow(images[frame_id])
        ax.set_axis_off()
        ax.set_title(frame_id, fontsize=8)
        for c, method in enumerate(columns):
            pred = np.array(first[method]["joints_mm"][first[method]["frame_ids"].index(frame_id)])
            error = np.linalg.norm((pred - pred[:1]) - (truth[frame_id] - truth[frame_id][:1]), axis=1).mean()
            ax = figure.add_subplot(len(frame_ids), width, r * width + c + 2, projection="3d")
            _draw_pose(ax, pred, COLOURS[method], f"{row_name(method)}: {error:.0f} mm", truth[frame_id])
        ax = figure.add_subplot(len(frame_ids), width, r * width + width, projection="3d")
        _draw_pose(ax, truth[frame_id], "black", "ground truth")
    figure.tight_layout()
    return _png(figure)


def _table_html(rows: Sequence[Mapping], title: str, paper: Mapping[str, tuple[float, float]] | None) -> str:
    names = (title, *TABLE_HEADER, *(("paper MPJPE / PA-MPJPE",) if paper else ()))
    head = "<tr>" + "".join(f"<th>{html.escape(name)}</th>" for name in names) + "</tr>"
    body = []
    for row in rows:
        cells = [html.escape(row["row"]), *table_cells(row)]
        if paper:
            reference = paper.get(row["method"])
            cells.append("" if reference is None else f"{reference[0]} / {reference[1]}")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _dann_html(groups: Mapping[str, list[Mapping]]) -> str:
    if "dann" not in groups:
        return ""
    lines = ["<tr><th>seed</th><th>round</th><th>discriminator loss</th><th>domain accuracy</th></tr>"]
    for trial in groups["dann"]:
        for record in trial["rounds"][1:]:
            t = record["training"]
            lines.append(
                f"<tr><td>{trial['seed']}</td><td>{record['round']}</td>"
                f"<td>{t['loss_domain']:.3f}</td><td>{t['domain_accuracy']:.2f}</td></tr>"
            )
    return (
        "<h2>DANN: the domain discriminator (last epoch of each round)</h2>"
        "<p>Accuracy near 0.5 means the encoder's features no longer tell source from target.</p>"
        f"<table>{''.join(lines)}</table>"
    )


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}"""

FIGURES = {
    "rounds.png": "Error per round",
    "curriculum.png": "Pseudo-labels and the curriculum",
    "per_joint.png": "Per joint",
    "per_action.png": "Per action",
    "skeletons.png": "Test frames side by side (the paper's Fig. 2)",
}


def example_frames(results: Mapping) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The crops and true joints (mm) of the example test frames that ``results.json`` carries."""
    if "examples" not in results:
        raise ValueError(
            "results.json lacks the example test frames (written before they were saved in it): "
            "rerun jobs/experiments.py with --resume to rewrite it from the finished trials"
        )
    examples = results["examples"]
    images = {
        frame_id: decode_image(base64.b64decode(data), frame_id)
        for frame_id, data in zip(examples["frame_ids"], examples["images"])
    }
    truth = {
        frame_id: np.asarray(joints, dtype=np.float32).reshape(NUM_JOINTS, 3)
        for frame_id, joints in zip(examples["frame_ids"], examples["joints_3d"])
    }
    return images, truth


def write_report(results: Mapping, out: str) -> str:
    """Write the figures and ``index.html`` under ``out``; returns the page's URI."""
    images, truth = example_frames(results)
    policies = [row["trial"] for row in results["table2"]]
    groups = by_method(results["trials"], [row["trial"] for row in results["table1"]] + policies)
    figures = {
        "rounds.png": rounds_figure(groups, policies),
        "curriculum.png": curriculum_figure(groups),
        "per_joint.png": breakdown_figure(groups, "per_joint", "final MPJPE per joint"),
        "per_action.png": breakdown_figure(groups, "per_action", "final MPJPE per action"),
        "skeletons.png": skeleton_figure(groups, images, truth),
    }
    for name, data in figures.items():
        storage.write_bytes(storage.join(out, name), data)
    seeds = sorted({t["seed"] for t in results["trials"]})
    machine = results["machine"]
    sections = "".join(
        f'<h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">'
        for name, title in FIGURES.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>dfa-ray experiments</title>
<style>{_STYLE}</style></head><body><h1>dfa-ray experiments</h1>
<p>Seeds {", ".join(map(str, seeds))}; mean ± sample std over seeds; final round. Target test split:
{html.escape(str(results["data"]["test"]))}. {results["wall_seconds"] / 60:.1f} min on {machine["cpus"]} CPUs
({html.escape(machine["platform"])}, torch {html.escape(machine["torch"])}).
"Mean pose" predicts the labeled source frames' mean root-relative pose for every test frame (at its
true root, as the models are evaluated); "MPJPE / mean pose" is a row's MPJPE over that baseline's,
per seed. "Gap closed" is the share of the Only source to Only target MPJPE gap a row closes, per seed.</p>
<h2>Table 1</h2>{_table_html(results["table1"], "method", PAPER_TABLE1)}
<p>The paper's numbers are SURREAL to Human3.6M without MPII, for reference only: a different data set
and scale.</p>
<h2>Table 2: curriculum policy (initial, step, maximum), with DFA</h2>
{_table_html(results["table2"], "policy", None)}
{_dann_html(groups)}{sections}</body></html>"""
    uri = storage.join(out, "index.html")
    storage.write_bytes(uri, page.encode())
    return uri
