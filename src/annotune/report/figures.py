"""The report's figures, drawn with matplotlib (Agg backend, imported only here) as PNG bytes.

`confusion_figure` (one system, single-label tasks: gold × predicted with the INVALID column),
`per_class_figure` (all systems' per-label F1), `curve_figure` (the learning curve with its confidence band
and reference lines), `throughput_figure` (labelling speed and fine-tuning time) and `answer_scores_figure`
(open answers: ROUGE-L and judge score distributions).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from annotune.config import ANSWER_MODES
from annotune.report.format import line_label, primary_name, results_task, size_label, slug


@dataclass
class Figure:
    name: str  # file stem (figures/<name>.png) and HTML id (fig-<name>)
    title: str
    png: bytes
    caption: str = ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 110,
                         "savefig.dpi": 110, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _short(name: str, n: int = 38) -> str:
    """A user string (system or label name) shortened for a figure, with "$" escaped (mathtext)."""
    name = name if len(name) <= n else name[: n - 1] + "…"
    return name.replace("$", r"\$")


def confusion_figure(system: dict) -> Figure:
    """Heat map of gold rows × predicted columns (the labels and INVALID); colour = share of the row."""
    import numpy as np

    plt = _pyplot()
    conf = system["metrics"]["confusion"]
    rows, cols = conf["rows"], conf["columns"]
    m = np.array(conf["matrix"], dtype=float)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 0.62 * len(cols), 1.2 + 0.45 * len(rows)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = int(m[i, j])
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.55 else ("#b00020" if (j == len(cols) - 1 and v) else "#222"))
    ax.set_xticks(range(len(cols)), [_short(c, 14) for c in cols], rotation=40, ha="right")
    ax.set_yticks(range(len(rows)), [_short(r, 18) for r in rows])
    ax.get_xticklabels()[-1].set_color("#b00020")
    ax.axvline(len(cols) - 1.5, color="#b00020", lw=1.2)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    m_ = system["metrics"]
    ax.set_title(f"{_short(system['name'], 44)}\nmacro-F1 {m_['macro_f1']:.3f}, valid {100 * m_['valid_rate']:.0f} %")
    return Figure(f"confusion-{slug(system['name'])}", f"Confusion matrix: {system['name']}", _png(fig))


def per_class_figure(results: dict) -> Figure | None:
    """Grouped bars of every system's per-label F1 (a heat map when there are too many bars)."""
    import numpy as np

    plt = _pyplot()
    task = results_task(results)
    systems = [s for s in results["systems"] if task.per_item_scores(s.get("metrics", {}))]
    if not systems:
        return None
    labels = list(task.per_item_scores(systems[0]["metrics"]))
    what = task.per_item_metric
    data = np.array([[task.per_item_scores(s["metrics"]).get(lab, 0.0) for lab in labels] for s in systems])
    if len(labels) * len(systems) > 60:  # too many bars: a heat map of labels × systems
        fig, ax = plt.subplots(figsize=(2.5 + 0.9 * len(systems), 1.0 + 0.22 * len(labels)))
        im = ax.imshow(data.T, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(systems)), [_short(s["name"], 24) for s in systems], rotation=35, ha="right")
        ax.set_yticks(range(len(labels)), [_short(lab, 30) for lab in labels], fontsize=7)
        fig.colorbar(im, ax=ax, label=what, shrink=0.6)
    else:
        height = 0.8 / len(systems)
        fig, ax = plt.subplots(figsize=(7.5, 1.0 + len(labels) * (0.22 * len(systems) + 0.25)))
        y = np.arange(len(labels))
        for k, (s, row) in enumerate(zip(systems, data)):
            ax.barh(y - 0.4 + height * (k + 0.5), row, height=height, label=_short(s["name"], 40))
        ax.set_yticks(y, [_short(lab, 30) for lab in labels])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel(what)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(labels) > 3 else -0.25),
                  ncol=2, frameon=False)
        ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Per-{task.item_word} {what}")
    return Figure("per-class-f1", f"Per-{task.item_word} {what}", _png(fig),
                  "INVALID answers count as misses of the gold label(s).")


def curve_figure(curve: dict) -> Figure:
    """Mean over seeds per training size, its bootstrap band, single seeds, and the references."""
    plt = _pyplot()
    primary = primary_name(curve["primary"])
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks: dict[int, str] = {}
    for k, (answer, block) in enumerate(curve["answers"].items()):
        rows = block["rows"]
        if not rows:
            continue
        c = colours[k % len(colours)]
        x = [r["n_train"] for r in rows]
        ax.plot(x, [r["mean"] for r in rows], "-o", color=c, lw=2, ms=5, label=f"{line_label(curve, answer)} (mean of seeds)")
        if all(r.get("ci") for r in rows):
            ax.fill_between(x, [r["ci"][0] for r in rows], [r["ci"][1] for r in rows], color=c, alpha=0.18, lw=0,
                            label=f"95 % CI ({line_label(curve, answer)}, bootstrap over test documents)")
        xs = [r["n_train"] for r in rows for _ in r["values"]]
        ys = [v for r in rows for v in r["values"]]
        ax.scatter(xs, ys, s=14, color=c, alpha=0.55, marker="x", zorder=3)
        if all(r.get("ci") for r in rows):  # the interval as error bars too (visible with a single size)
            ax.errorbar(x, [r["mean"] for r in rows], yerr=[[r["mean"] - r["ci"][0] for r in rows],
                                                            [r["ci"][1] - r["mean"] for r in rows]],
                        fmt="none", ecolor=c, elinewidth=1, capsize=3, alpha=0.8)
        for r in rows:
            ticks[r["n_train"]] = size_label(r["size"], r["n_train"])
    ref_styles = ["--", ":", "-.", (0, (5, 2, 1, 2))]
    for k, ref in enumerate(curve.get("references", [])):
        style = ref_styles[k % len(ref_styles)]
        ax.axhline(ref["value"], color="#555" if k % 2 == 0 else "#999", ls=style, lw=1.3,
                   label=f"{_short(ref['name'], 36)}: {ref['value']:.3f}")
    if ticks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
        ax.minorticks_off()
    ax.set_xlabel("labelled training documents (log scale)")
    ax.set_ylabel(primary)
    lo = min([0.0] + [r["ci"][0] for b in curve["answers"].values() for r in b["rows"] if r.get("ci")])
    ax.set_ylim(max(0.0, lo - 0.02), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    seeds = curve["curve"]["seeds"]
    ax.set_title(f"Learning curve: {primary} vs training documents "
                 f"({len(seeds)} seed{'s' * (len(seeds) > 1)} per size)")
    return Figure("learning-curve", "Learning curve", _png(fig),
                  f"Line: mean {primary} over seeds; band: 95 % percentile bootstrap interval of that mean over test "
                  "documents; crosses: single seeds; horizontal lines: reference systems on the same test split.")


def throughput_figure(results: dict) -> Figure | None:
    """Labelling speed of every system and, with a curve, fine-tuning time per size."""
    plt = _pyplot()
    systems = [s for s in results["systems"] if s["stats"].get("docs_per_s")]
    curve = results.get("curve")
    curve_rows = []
    if curve:
        line, first = next(iter(curve["answers"].items()), ("", {"rows": []}))
        curve_rows = [r for r in first["rows"] if r.get("train_seconds")]
    panels = bool(systems) + bool(curve_rows)
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 0.9 + 0.32 * max(len(systems), 6)), squeeze=False)
    axes = list(axes[0])
    if systems:
        ax = axes.pop(0)
        names = [_short(s["name"], 32) for s in systems]
        ax.barh(range(len(systems)), [s["stats"]["docs_per_s"] for s in systems], color="#4c72b0")
        ax.set_yticks(range(len(systems)), names)
        ax.invert_yaxis()
        speeds = [s["stats"]["docs_per_s"] for s in systems]
        if max(speeds) / min(speeds) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("documents / second" + (" (log scale)" if max(speeds) / min(speeds) > 20 else ""))
        ax.set_title("Labelling throughput on the test split")
        ax.grid(axis="x", alpha=0.3)
    if curve_rows:
        ax = axes.pop(0)
        x = [r["n_train"] for r in curve_rows]
        ax.plot(x, [r["train_seconds"] for r in curve_rows], "-o", color="#dd8452")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [size_label(r["size"], r["n_train"]) for r in curve_rows])
        ax.minorticks_off()
        ax.set_xlabel("labelled training documents")
        ax.set_ylabel("training seconds (mean of seeds)")
        ax.set_title("Fine-tuning time" if line in ANSWER_MODES else _short(f"Training time, {line}", 44))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return Figure("throughput", "Cost and throughput", _png(fig))


SCORE_PANELS = (("rouge_l_per_document", "ROUGE-L against the reference", "ROUGE-L F1 (INVALID: 0)", (0.0, 1.0)),
                ("judge_items", "Judge score (chosen)", "mean score over criteria and repeats", None),
                ("judge_expected_items", "Judge score (probability-weighted)", "E[score]", None))


def answer_scores_figure(results: dict) -> Figure | None:
    """Open answers (a ``qa`` task): the distribution over test questions of each system's ROUGE-L and,
    where a judge graded them, of its judge scores (one histogram per system, overlaid)."""
    plt = _pyplot()
    judge = results.get("judge") or {}
    scale = (judge.get("rubric") or {}).get("scale_min", 1), (judge.get("rubric") or {}).get("scale_max", 10)
    panels = [(key, title, xlabel, rng or scale) for key, title, xlabel, rng in SCORE_PANELS
              if any(s["metrics"].get(key) for s in results["systems"])]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (key, title, xlabel, rng) in zip(axes[0], panels):
        for s in results["systems"]:
            values = [v for v in s["metrics"].get(key) or [] if v is not None]
            if values:
                ax.hist(values, bins=20, range=rng, alpha=0.5, label=_short(s["name"], 30))
        ax.set(title=title, xlabel=xlabel, ylabel="questions")
        ax.grid(alpha=0.3)
    drawn = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]
    if drawn:
        drawn[-1].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return Figure("answer-scores", "Score distributions", _png(fig),
                  "One value per test question and system; unparsed verdicts are left out of the judge panels.")


__all__ = ["Figure", "answer_scores_figure", "confusion_figure", "per_class_figure", "curve_figure",
           "throughput_figure"]
