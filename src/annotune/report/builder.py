"""Reports a researcher can put in a paper: `annotune report <output folder>`.

Reads what `compare` and `curve` stored in an output folder (``results.json`` and, when a learning curve
was run, ``curve/curve.json``) and writes, next to them:

- ``report.html``: one self-contained file (inline CSS, figures embedded as base64 PNG, no scripts and no
  external resources), so that it can be mailed or archived;
- ``report.md`` with the figures as PNG files in ``figures/``.

Sections: summary, comparison table, confusion matrices with the INVALID column (single-label tasks),
per-class F1, the learning curve with its confidence band and reference lines, cost and throughput, the
reproducibility manifest (libraries, hardware, seeds, config) and a methods paragraph generated from all
of that (`methods_paragraph`), ready to paste into a paper. Figures are drawn with matplotlib (Agg
backend), imported only here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotune.errors import ConfigError

PRIMARY_NAMES = {"macro_f1": "macro-F1", "micro_f1": "micro-F1", "intensity_micro_f1": "intensity micro-F1"}
KIND_WORDS = {"single": "single-label", "multi": "multi-label",
              "dimensions": "multi-dimension (with an intensity scale)"}
ANSWER_WORDS = {"generate": "free generation", "constrained": "constrained answering"}


# ---------------------------------------------------------------------------- loading
def load_report_data(folder: str | Path) -> dict:
    """results.json of an output folder, with the learning curve (curve/curve.json) under ``"curve"``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("not an output folder of `annotune compare` or `annotune curve`", file=folder)
    path = folder / "results.json"
    if not path.is_file():
        raise ConfigError("no results.json here: run `annotune compare` or `annotune curve` into this folder first",
                          file=folder)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"results.json is not valid JSON: {exc}", file=path) from None
    curve_path = folder / "curve" / "curve.json"
    if curve_path.is_file():
        try:
            results["curve"] = json.loads(curve_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"curve.json is not valid JSON: {exc}", file=curve_path) from None
    return results


# ---------------------------------------------------------------------------- formatting
def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(value: Any, ci: Any) -> str:
    if value is None:
        return "–"
    if ci and ci[0] is not None:
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}"


def _num(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "figure"


def _primary(results: dict) -> str:
    kind = results["task"]["task"]["kind"]
    return {"single": "macro_f1", "multi": "micro_f1", "dimensions": "intensity_micro_f1"}[kind]


def _size_label(size: Any, n_train: int) -> str:
    return f"all ({n_train:,})" if size == "all" else f"{n_train:,}"


def model_name(spec: str | None) -> str:
    """A readable name for a model spec: the embedded model's real name, a folder's name, a hub id."""
    from annotune.backends.models import EMBEDDED_ALIASES

    if not spec:
        return "the default model (SmolLM2-135M-Instruct)"
    if spec.strip().lower() in EMBEDDED_ALIASES:
        return "SmolLM2-135M-Instruct"
    path = Path(spec)
    if path.is_absolute() or spec.startswith((".", "~")):
        return path.name or spec
    return spec


def _config_model(results: dict) -> str | None:
    """The [model] name of the config (a system's stored spec does not repeat it)."""
    import tomllib

    try:
        raw = tomllib.loads(Path(results.get("config", "")).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model = raw.get("model")
    return model.get("name") if isinstance(model, dict) else None


def _system_model(results: dict, spec: dict) -> str:
    return model_name(spec.get("model") or _config_model(results) or "smollm2")


# ---------------------------------------------------------------------------- document model
@dataclass
class Figure:
    name: str  # file stem
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list[tuple] = field(default_factory=list)  # ("p", text) ("table", header, rows) ("figures", [Figure])
    # ("pre", text) ("quote", text) ("list", [text])


# ---------------------------------------------------------------------------- figures
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
    return Figure(f"confusion-{_slug(system['name'])}", f"Confusion matrix: {system['name']}", _png(fig))


def _per_class(system: dict, kind: str) -> dict[str, float]:
    m = system["metrics"]
    if kind == "dimensions":
        return {d: v["presence_f1"] for d, v in m.get("per_dimension", {}).items()}
    return {lab: v["f1"] for lab, v in m.get("per_class", {}).items()}


def per_class_figure(results: dict) -> Figure | None:
    import numpy as np

    plt = _pyplot()
    kind = results["task"]["task"]["kind"]
    systems = [s for s in results["systems"] if _per_class(s, kind)]
    if not systems:
        return None
    labels = list(_per_class(systems[0], kind))
    what = "presence F1" if kind == "dimensions" else "F1"
    data = np.array([[_per_class(s, kind).get(lab, 0.0) for lab in labels] for s in systems])
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
    ax.set_title(f"Per-{'dimension' if kind == 'dimensions' else 'class'} {what}")
    return Figure("per-class-f1", f"Per-{'dimension' if kind == 'dimensions' else 'class'} {what}", _png(fig),
                  "INVALID answers count as misses of the gold label(s).")


def curve_figure(curve: dict) -> Figure:
    plt = _pyplot()
    primary = PRIMARY_NAMES.get(curve["primary"], curve["primary"])
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks: dict[int, str] = {}
    for k, (answer, block) in enumerate(curve["answers"].items()):
        rows = block["rows"]
        if not rows:
            continue
        c = colours[k % len(colours)]
        x = [r["n_train"] for r in rows]
        ax.plot(x, [r["mean"] for r in rows], "-o", color=c, lw=2, ms=5, label=f"fine-tuned, {answer} (mean of seeds)")
        if all(r.get("ci") for r in rows):
            ax.fill_between(x, [r["ci"][0] for r in rows], [r["ci"][1] for r in rows], color=c, alpha=0.18, lw=0,
                            label=f"95 % CI ({answer}, bootstrap over test documents)")
        xs = [r["n_train"] for r in rows for _ in r["values"]]
        ys = [v for r in rows for v in r["values"]]
        ax.scatter(xs, ys, s=14, color=c, alpha=0.55, marker="x", zorder=3)
        if all(r.get("ci") for r in rows):  # the interval as error bars too (visible with a single size)
            ax.errorbar(x, [r["mean"] for r in rows], yerr=[[r["mean"] - r["ci"][0] for r in rows],
                                                            [r["ci"][1] - r["mean"] for r in rows]],
                        fmt="none", ecolor=c, elinewidth=1, capsize=3, alpha=0.8)
        for r in rows:
            ticks[r["n_train"]] = _size_label(r["size"], r["n_train"])
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
    plt = _pyplot()
    systems = [s for s in results["systems"] if s["stats"].get("docs_per_s")]
    curve = results.get("curve")
    curve_rows = []
    if curve:
        first = next(iter(curve["answers"].values()), {"rows": []})
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
        ax.set_xticks(x, [_size_label(r["size"], r["n_train"]) for r in curve_rows])
        ax.minorticks_off()
        ax.set_xlabel("labelled training documents")
        ax.set_ylabel("training seconds (mean of seeds)")
        ax.set_title("Fine-tuning time")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return Figure("throughput", "Cost and throughput", _png(fig))


# ---------------------------------------------------------------------------- sections
def _comparison_section(results: dict) -> Section:
    from annotune.experiments.results import table_rows

    sec = Section("comparison", "Comparison")
    if not results["systems"]:
        sec.blocks.append(("p", "No systems were compared."))
        return sec
    header, rows = table_rows(results)
    sec.blocks.append(("table", header, rows))
    sec.blocks.append(("p", f"All systems labelled the same {results['data']['test']:,} held-out test documents. "
                       "Unparseable answers are INVALID: kept in every denominator and counted as wrong "
                       "(“Acc (all)”); “Acc (valid)” scores only the parseable answers. Intervals: 95 % "
                       "percentile bootstrap over test documents."))
    return sec


def _confusion_section(results: dict) -> Section:
    sec = Section("confusion", "Confusion matrices")
    kind = results["task"]["task"]["kind"]
    systems = [s for s in results["systems"] if s["metrics"].get("confusion")]
    if kind != "single" or not systems:
        sec.blocks.append(("p", "Confusion matrices apply to single-label tasks; see the per-label scores below."))
        return sec
    sec.blocks.append(("p", "Rows: gold label; columns: predicted label, with unparseable answers in the red "
                       "INVALID column. Numbers are documents; colour is the share of the gold row."))
    sec.blocks.append(("figures", [confusion_figure(s) for s in systems], "grid"))
    return sec


def _per_class_section(results: dict) -> Section:
    kind = results["task"]["task"]["kind"]
    word = "dimension" if kind == "dimensions" else "class"
    sec = Section("per-class", f"Per-{word} F1")
    fig = per_class_figure(results)
    if fig is None:
        sec.blocks.append(("p", "No per-label scores."))
        return sec
    sec.blocks.append(("figures", [fig]))
    systems = [s for s in results["systems"] if _per_class(s, kind)]
    labels = list(_per_class(systems[0], kind))
    support_key = "per_dimension" if kind == "dimensions" else "per_class"
    support = {lab: v.get("support") for lab, v in systems[0]["metrics"][support_key].items()}
    header = [word.capitalize(), "Support", *[s["name"] for s in systems]]
    rows = [[lab, str(support.get(lab, "–")), *[_f(_per_class(s, kind).get(lab)) for s in systems]] for lab in labels]
    sec.blocks.append(("table", header, rows))
    return sec


def _curve_section(results: dict) -> Section:
    sec = Section("learning-curve", "Learning curve")
    curve = results.get("curve")
    if not curve:
        sec.blocks.append(("p", "No learning curve in this folder (run `annotune curve` with a [curve] table)."))
        return sec
    primary = PRIMARY_NAMES.get(curve["primary"], curve["primary"])
    sec.blocks.append(("figures", [curve_figure(curve)]))
    c = curve["curve"]
    sec.blocks.append(("p", f"{model_name(curve['base_model'])} fine-tuned with LoRA on seeded stratified subsamples "
                       f"of the training split ({curve['data']['train_pool']:,} documents), {len(c['seeds'])} "
                       f"seed{'s' * (len(c['seeds']) > 1)} per size ({', '.join(map(str, c['seeds']))}); every "
                       "model is scored on the same "
                       f"{curve['data']['test']:,} test documents. “95 % CI”: percentile bootstrap over test "
                       f"documents ({curve['n_boot']:,} resamples) of the mean over seeds; “SD”: standard "
                       "deviation over seeds (training data and initialisation); “seed CI”: t-interval of the mean "
                       "over seeds."))
    for answer, block in curve["answers"].items():
        header = ["Train docs", "Seeds", f"Mean {primary} [95% CI]", "SD", "Seed CI", "Per seed", "Valid %",
                  "Train s", "Train tok/s"]
        rows = []
        for r in block["rows"]:
            rows.append([_size_label(r["size"], r["n_train"]), str(len(r["seeds"])), _ci(r["mean"], r.get("ci")),
                         _f(r.get("sd")),
                         f"[{r['seed_ci'][0]:.3f}, {r['seed_ci'][1]:.3f}]" if r.get("seed_ci") else "–",
                         ", ".join(f"{v:.3f}" for v in r["values"]), _pct(r.get("valid_rate")),
                         _num(r.get("train_seconds")), _num(r.get("train_tokens_per_s"), 0)])
        sec.blocks.append(("h3", f"Fine-tuned, {answer} answers"))
        sec.blocks.append(("table", header, rows))
        if block["matches"]:
            mh = ["Reference", f"Reference {primary} [95% CI]", "Smallest size: mean ≥ reference",
                  f"Mean {primary} [95% CI] there", "Difference [95% CI]",
                  "Smallest size: CI lower bound ≥ reference"]
            mrows = []
            for m in block["matches"]:
                bm, bc = m.get("by_mean"), m.get("by_ci")
                mrows.append([
                    m["reference"], _ci(m["reference_value"], m.get("reference_ci")),
                    _size_label(bm["size"], bm["n_train"]) if bm else "not reached",
                    _ci(bm["mean"], bm.get("ci")) if bm else "–",
                    (f"{bm['difference']:+.3f}" + (f" [{bm['difference_ci'][0]:+.3f}, {bm['difference_ci'][1]:+.3f}]"
                                                    if bm.get("difference_ci") else "")) if bm else "–",
                    _size_label(bc["size"], bc["n_train"]) if bc else "not reached",
                ])
            sec.blocks.append(("table", mh, mrows))
    sec.blocks.append(("p", "“Mean ≥ reference”: the smallest size whose mean over seeds reaches the reference's "
                       "value. “CI lower bound ≥ reference”: the smallest size whose 95 % interval lies "
                       "entirely at or above it. The difference interval is a paired bootstrap (the same "
                       "resampled test documents for both)."))
    return sec


def _cost_section(results: dict) -> Section:
    sec = Section("cost", "Cost and throughput")
    header = ["System", "Docs/s", "Seconds", "Prompt tok/s", "Generated tokens", "Train s", "Train tok/s", "Cost USD"]
    rows = []
    for s in results["systems"]:
        st = s["stats"]
        rows.append([s["name"], _num(st.get("docs_per_s")), _num(st.get("seconds")),
                     _num(st.get("prompt_tokens_per_s"), 0), _num(st.get("generated_tokens")),
                     _num(st.get("train_seconds")), _num(st.get("train_tokens_per_s"), 0),
                     f"{st['cost_usd']:.4f}" if st.get("cost_usd") is not None else "–"])
    if rows:
        sec.blocks.append(("table", header, rows))
    curve = results.get("curve")
    if curve:
        sec.blocks.append(("p", f"Learning curve: {len(curve['points'])} fine-tuning runs, "
                           f"{curve.get('train_seconds_total', 0):,.0f} s of training, "
                           f"{curve['seconds']:,.0f} s in all "
                           "(the run that finished the curve; reused points count zero)."))
    hw = results.get("environment", {}).get("hardware", {})
    if hw:
        sec.blocks.append(("p", f"Measured on {_hardware_words(hw)}. Throughput is wall-clock and includes "
                           "tokenisation and parsing; “Prompt tok/s” counts the full prompt of every document, "
                           "as an API would bill it."))
    fig = throughput_figure(results)
    if fig is not None:
        sec.blocks.append(("figures", [fig]))
    return sec


def _hardware_words(hw: dict) -> str:
    words = f"{hw.get('cpu', 'an unknown CPU')} ({hw.get('cpu_count', '?')} cores"
    if hw.get("memory_gib"):
        words += f", {hw['memory_gib']} GiB RAM"
    words += ")"
    if hw.get("gpu"):
        words += f" with {hw.get('gpu_count', 1)}× {hw['gpu']}"
    return words


def _manifest_section(results: dict) -> Section:
    sec = Section("manifest", "Reproducibility manifest")
    data = results.get("data", {})
    rows = [["Comparison", results.get("name", "")], ["Config", results.get("config", "")],
            ["Created", results.get("created", "")], ["Seed", str(results.get("seed", ""))],
            ["Task", f"{results['task']['task']['name']} ({results['task']['task']['kind']}, "
                     f"{len(results['task']['labels'])} labels)"],
            ["Documents", f"{data.get('documents', '–')} ({data.get('dropped_empty', 0)} empty and "
                          f"{data.get('dropped_duplicates', 0)} duplicates dropped)"],
            ["Train / test", f"{data.get('train', '–')} / {data.get('test', '–')}"],
            ["Test ids sha256", data.get("test_ids_sha256", "–")]]
    curve = results.get("curve")
    if curve:
        rows += [["Curve sizes", ", ".join(map(str, curve["curve"]["sizes"]))],
                 ["Curve seeds", ", ".join(map(str, curve["curve"]["seeds"]))],
                 ["Curve base model", curve["base_model"]],
                 ["Bootstrap resamples", str(curve["n_boot"])]]
    sec.blocks.append(("table", ["Item", "Value"], rows))
    env = results.get("environment", {})
    libs = env.get("libraries", {})
    if libs:
        sec.blocks.append(("h3", "Libraries"))
        sec.blocks.append(("table", ["Package", "Version"], [[k, v or "not installed"] for k, v in libs.items()]))
    hw = env.get("hardware", {})
    if hw:
        sec.blocks.append(("h3", "Hardware"))
        sec.blocks.append(("table", ["Item", "Value"], [[k, str(v)] for k, v in hw.items()]))
    if results["systems"]:
        sec.blocks.append(("h3", "Systems (settings as run, with fingerprints)"))
        sec.blocks.append(("pre", json.dumps([{"name": s["name"], "fingerprint": s.get("fingerprint"),
                                              "spec": s.get("spec")} for s in results["systems"]],
                                             indent=2, ensure_ascii=False)))
    if curve:
        sec.blocks.append(("h3", "Learning curve settings"))
        sec.blocks.append(("pre", json.dumps({"curve": curve["curve"], "finetune": curve.get("finetune"),
                                              "hyperparameters": _curve_hparams(curve)}, indent=2,
                                             ensure_ascii=False)))
    config_text = _read_config(results)
    if config_text:
        sec.blocks.append(("h3", "Config file (as it is on disk now)"))
        sec.blocks.append(("pre", config_text))
    return sec


def _curve_hparams(curve: dict) -> dict | None:
    for p in curve.get("points", []):
        hp = p.get("training", {}).get("hyperparameters")
        if hp:
            return {k: v for k, v in hp.items() if k != "seed"}
    return None


def _read_config(results: dict) -> str | None:
    try:
        text = Path(results.get("config", "")).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) < 200_000 else None


def _summary_section(results: dict) -> Section:
    sec = Section("summary", "Summary")
    items = []
    primary = _primary(results)
    pname = PRIMARY_NAMES[primary]
    systems = results["systems"]
    if systems:
        best = max(systems, key=lambda s: s["metrics"].get(primary) or 0)
        m = best["metrics"]
        items.append(f"Best system on {results['data']['test']:,} test documents: {best['name']} "
                     f"({pname} {_ci(m.get(primary), m.get(primary + '_ci'))}, valid answers "
                     f"{_pct(m['valid_rate'])} %).")
    curve = results.get("curve")
    if curve:
        for answer, block in curve["answers"].items():
            for mt in block["matches"]:
                bm, bc = mt.get("by_mean"), mt.get("by_ci")
                ref = f"{mt['reference']} ({mt['reference_value']:.3f})"
                if bm:
                    text = (f"Fine-tuned ({answer}) reaches {ref} on average from "
                            f"{_size_label(bm['size'], bm['n_train'])} labelled documents ({pname} "
                            f"{_ci(bm['mean'], bm.get('ci'))})")
                    text += (f"; with its 95 % interval above it from {_size_label(bc['size'], bc['n_train'])}."
                             if bc else "; its 95 % interval never lies entirely above it.")
                else:
                    largest = block["rows"][-1] if block["rows"] else None
                    text = f"Fine-tuned ({answer}) does not reach {ref} at any size tried"
                    text += (f" (largest: {_size_label(largest['size'], largest['n_train'])} documents, "
                             f"{_ci(largest['mean'], largest.get('ci'))})." if largest else ".")
                items.append(text)
    if items:
        sec.blocks.append(("list", items))
    return sec


def _methods_section(results: dict) -> Section:
    sec = Section("methods", "Methods paragraph")
    sec.blocks.append(("p", "Generated from the manifest; check it and adapt it to your paper."))
    sec.blocks.append(("quote", methods_paragraph(results)))
    return sec


def build_sections(results: dict) -> list[Section]:
    return [_summary_section(results), _comparison_section(results), _confusion_section(results),
            _per_class_section(results), _curve_section(results), _cost_section(results),
            _manifest_section(results), _methods_section(results)]


# ---------------------------------------------------------------------------- methods paragraph
def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _lora_words(params: dict) -> str:
    from annotune.finetune.trainer import FineTuneConfig

    hp = {**{f: getattr(FineTuneConfig(), f) for f in ("r", "alpha", "dropout", "learning_rate", "epochs",
                                                        "batch_size", "max_length", "target_modules")},
          **{k: v for k, v in (params or {}).items()}}
    epochs = hp["epochs"]
    epochs = int(epochs) if float(epochs).is_integer() else epochs
    target = "all linear layers" if hp["target_modules"] == "all-linear" else f"modules {hp['target_modules']}"
    return (f"LoRA (rank {hp['r']}, α = {hp['alpha']}, dropout {hp['dropout']}, on {target}), learning rate "
            f"{hp['learning_rate']:g}, {epochs} epoch{'s' * (epochs != 1)}, batch size {hp['batch_size']}, "
            f"loss on the answer tokens only")


def _system_words(results: dict, s: dict) -> str:
    spec = s.get("spec", {})
    stype = spec.get("type", "prompt")
    answer = ANSWER_WORDS.get(spec.get("answer", "generate"), spec.get("answer"))
    if stype == "prompt":
        shots = int(spec.get("shots", 0))
        shot_words = "zero-shot" if shots == 0 else f"{shots}-shot"
        return f"{_system_model(results, spec)} prompted {shot_words} with {answer} (“{s['name']}”)"
    if stype == "finetuned":
        size = spec.get("train_size")
        n = s.get("stats", {}).get("train_examples")
        data = f"{n:,} training documents" if n else (f"{size:,} training documents" if size else "the training split")
        return f"{_system_model(results, spec)} fine-tuned on {data}, answering by {answer} (“{s['name']}”)"
    if stype == "api":
        shots = int(spec.get("shots", 0))
        shot_words = "zero-shot" if shots == 0 else f"{shots}-shot"
        return (f"{spec.get('model', s['name'])} through its API, prompted {shot_words} with {answer} "
                f"(“{s['name']}”)")
    if stype == "tfidf":
        return f"a TF-IDF + logistic-regression baseline (C = {spec.get('C', 10.0)}) trained on the training split"
    if stype == "predictions":
        cost = s.get("stats", {}).get("cost_usd")
        return (f"labels produced by {s['name']} (read from a file{f', costing ${cost:.2f}' if cost else ''})")
    return s["name"]


def methods_paragraph(results: dict) -> str:
    """A paragraph for a paper's methods section, from results.json (and the curve under ``"curve"``)."""
    task = results["task"]["task"]
    labels = [lab["name"] for lab in results["task"]["labels"]]
    kind = task["kind"]
    data = results.get("data", {})
    primary = _primary(results)
    pname = PRIMARY_NAMES[primary]
    libs = results.get("environment", {}).get("libraries", {})
    hw = results.get("environment", {}).get("hardware", {})
    curve = results.get("curve")
    out = []
    unit = "dimensions" if kind == "dimensions" else "labels"
    shown = ", ".join(labels[:8]) + (f" and {len(labels) - 8} more" if len(labels) > 8 else "")
    scale = (f", each coded on the scale {', '.join(task['scale'])}" if kind == "dimensions" and task.get("scale")
             else "")
    out.append(f"We coded {data.get('documents', 0):,} documents (“{task['name']}”) with a {KIND_WORDS[kind]} "
               f"codebook of {len(labels)} {unit} ({shown}{scale}).")
    out.append(f"All systems were evaluated on the same held-out test set of {data.get('test', 0):,} documents; the "
               f"other {data.get('train', 0):,} documents formed the training pool (seed {results.get('seed')}).")
    systems = results.get("systems", [])
    if systems:
        out.append(f"We compared {_join([_system_words(results, s) for s in systems])}.")
    prompts = [s for s in systems if s.get("spec", {}).get("type", "prompt") in ("prompt", "api")]
    if prompts:
        few = [s for s in prompts if int(s["spec"].get("shots", 0)) > 0]
        text = ("Prompts gave the codebook's instructions and every label with its definition"
                + (", followed by labelled examples drawn from the training pool, balanced across labels"
                   if few else "")
                + ".")
        out.append(text)
    answers = {s.get("spec", {}).get("answer", "generate") for s in systems
               if s.get("spec", {}).get("type", "prompt") in ("prompt", "finetuned", "api")}
    if curve:
        answers |= set(curve["curve"]["answers"])
    if "generate" in answers:
        out.append("With free generation the model's greedy answer was parsed against the codebook (tolerating case, "
                   "punctuation and aliases); an answer that could not be parsed was kept as INVALID, never replaced "
                   "by a label.")
    if "constrained" in answers:
        out.append("With constrained answering the model's probability of every allowed answer was computed and the "
                   "most probable one chosen" + (", with a yes/no question per label" if kind == "multi" else "")
                   + (", with a question per dimension" if kind == "dimensions" else "") + ".")
    tuned = [s for s in systems if s.get("spec", {}).get("type") == "finetuned"]
    if tuned or curve:
        params = (curve or {}).get("finetune") or (tuned[0]["spec"].get("finetune") if tuned else {})
        out.append(f"Fine-tuning used {_lora_words(params)}, with TRL {libs.get('trl') or '?'} and PEFT "
                   f"{libs.get('peft') or '?'}; fine-tuned models were trained and prompted with the label names only, "
                   "without definitions.")
    if curve:
        c = curve["curve"]
        sizes = [f"{s:,}" if s != "all" else "all" for s in c["sizes"]]
        out.append("To measure how much labelled data fine-tuning needs, we fine-tuned "
                   f"{model_name(curve['base_model'])} "
                   f"on seeded stratified subsamples of {_join(sizes)} training documents, with {len(c['seeds'])} "
                   f"seed{'s' * (len(c['seeds']) > 1)} per size (seeds {', '.join(map(str, c['seeds']))}; a seed "
                   "sets both the subsample and the training), and report the mean over seeds with a 95 % "
                   "percentile bootstrap interval over test documents.")
        for answer, block in curve["answers"].items():
            for mt in block["matches"]:
                bm = mt.get("by_mean")
                bc = mt.get("by_ci")
                if bm:
                    text = (f"The smallest training set at which the fine-tuned model ({answer} answers) matched "
                            f"{mt['reference']} ({pname} {mt['reference_value']:.3f}) on average was {bm['n_train']:,} "
                            f"documents (mean {_ci(bm['mean'], bm.get('ci'))})")
                    text += (f"; its 95 % interval lay entirely above the reference from {bc['n_train']:,} documents."
                             if bc else "; at no size tried did its 95 % interval lie entirely above the reference.")
                    out.append(text)
                else:
                    out.append(f"The fine-tuned model ({answer} answers) did not reach {mt['reference']} ({pname} "
                               f"{mt['reference_value']:.3f}) at any size tried.")
    n_boot = (curve or {}).get("n_boot")
    if n_boot is None:
        n_boot = next((s["metrics"].get("n_boot") for s in systems if s.get("metrics")), None)
    ci_words = (f" with 95 % percentile bootstrap confidence intervals ({n_boot:,} resamples of the test documents)"
                if n_boot else "")
    out.append(f"We report {pname}{ci_words}, the share of valid answers, and accuracy with unparseable (INVALID) "
               "answers kept in the denominator and counted as errors.")
    env = [f"annotune {libs['annotune']}" if libs.get("annotune") else "annotune",
           f"PyTorch {libs['torch']}" if libs.get("torch") else "", f"Transformers {libs['transformers']}"
           if libs.get("transformers") else ""]
    out.append(f"Experiments ran with {_join(env)} on {_hardware_words(hw) if hw else 'an unrecorded machine'}.")
    return " ".join(out)


# ---------------------------------------------------------------------------- rendering
_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;border-bottom:2px solid #e4e4e4;padding-bottom:4px;margin-top:2em}
h3{font-size:1.02em;margin:1.3em 0 .4em}.sub{color:#666;margin:0 0 1em}
nav a{margin-right:14px;color:#2457a6;text-decoration:none;font-size:.92em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.86em;display:block;overflow-x:auto;max-width:100%}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#f2f4f7;font-weight:600;white-space:normal;vertical-align:bottom}
td:first-child,th:first-child{text-align:left}
tr:hover td{background:#f8fafc}.kv td,.kv th{text-align:left;white-space:normal;word-break:break-all}
.figures{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.figures.grid figure{flex:0 1 calc(50% - 7px)}
figure{margin:0;max-width:100%}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#555;max-width:640px}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:.8em;max-height:420px}
blockquote{background:#f4f8ff;border-left:4px solid #2457a6;margin:.5em 0;padding:10px 14px}
footer{color:#888;font-size:.8em;margin-top:3em}
"""


def render_html(results: dict, sections: list[Section]) -> str:
    e = html.escape
    task = results["task"]["task"]
    title = f"annotune report — {results.get('name', task['name'])}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style>", "</head>", "<body>", "<main>", f"<h1>{e(title)}</h1>",
             f'<p class="sub">{e(KIND_WORDS[task["kind"]])} task “{e(task["name"])}”, '
             f'{len(results["task"]["labels"])} '
             f'labels, {results["data"]["test"]:,} test documents · {e(str(results.get("created", "")))}</p>',
             "<nav>" + "".join(f'<a href="#{s.id}">{e(s.title)}</a>' for s in sections) + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{s.id}">')
        parts.append(f"<h2>{e(s.title)}</h2>")
        for block in s.blocks:
            kind = block[0]
            if kind == "p":
                parts.append(f"<p>{e(block[1])}</p>")
            elif kind == "h3":
                parts.append(f"<h3>{e(block[1])}</h3>")
            elif kind == "quote":
                parts.append(f'<blockquote class="methods">{e(block[1])}</blockquote>')
            elif kind == "pre":
                parts.append(f"<pre>{e(block[1])}</pre>")
            elif kind == "list":
                parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                header, rows = block[1], block[2]
                kv = ' class="kv"' if len(header) == 2 else ""
                parts.append(f"<table{kv}><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header)
                             + "</tr></thead><tbody>")
                for r in rows:
                    parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
                parts.append("</tbody></table>")
            elif kind == "figures":
                parts.append(f'<div class="figures{" " + block[2] if len(block) > 2 else ""}">')
                for fig in block[1]:
                    data = base64.b64encode(fig.png).decode("ascii")
                    parts.append(f'<figure id="fig-{fig.name}"><img src="data:image/png;base64,{data}" '
                                 f'alt="{e(fig.title)}">'
                                 + (f"<figcaption>{e(fig.caption)}</figcaption>" if fig.caption else "") + "</figure>")
                parts.append("</div>")
        parts.append("</section>")
    parts.append(f"<footer>Written by annotune report on {e(time.strftime('%Y-%m-%d %H:%M'))} from "
                 f"results.json{' and curve/curve.json' if results.get('curve') else ''}.</footer>")
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: dict, sections: list[Section], figures_dir: str = "figures") -> str:
    task = results["task"]["task"]
    lines = [f"# annotune report — {results.get('name', task['name'])}", "",
             f"{KIND_WORDS[task['kind']]} task “{task['name']}”, {len(results['task']['labels'])} labels, "
             f"{results['data']['test']:,} test documents · {results.get('created', '')}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for block in s.blocks:
            kind = block[0]
            if kind == "p":
                lines += [block[1], ""]
            elif kind == "h3":
                lines += [f"### {block[1]}", ""]
            elif kind == "quote":
                lines += ["> " + block[1], ""]
            elif kind == "pre":
                lines += ["```", block[1].rstrip("\n"), "```", ""]
            elif kind == "list":
                lines += [f"- {i}" for i in block[1]] + [""]
            elif kind == "table":
                header, rows = block[1], block[2]
                lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                lines.append("|" + "|".join("---" for _ in header) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                lines.append("")
            elif kind == "figures":
                for fig in block[1]:
                    lines.append(f"![{fig.title}]({figures_dir}/{fig.name}.png)")
                    if fig.caption:
                        lines += ["", f"*{fig.caption}*"]
                    lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_report(folder: str | Path, output: str | Path | None = None) -> dict[str, Path]:
    """Write report.html (self-contained), report.md and figures/*.png for an output folder; returns the
    paths. ``output``: another folder to write them to (default: the output folder itself)."""
    folder = Path(folder)
    results = load_report_data(folder)
    target = Path(output) if output else folder
    target.mkdir(parents=True, exist_ok=True)
    sections = build_sections(results)
    figures_dir = target / "figures"
    figures_dir.mkdir(exist_ok=True)
    for old in figures_dir.glob("*.png"):  # figures of systems no longer in the results
        old.unlink()
    names = set()
    for s in sections:
        for block in s.blocks:
            if block[0] == "figures":
                for fig in block[1]:
                    base, k = fig.name, 2
                    while fig.name in names:  # two systems whose names slug alike
                        fig.name = f"{base}-{k}"
                        k += 1
                    names.add(fig.name)
                    (figures_dir / f"{fig.name}.png").write_bytes(fig.png)
    paths = {"html": target / "report.html", "markdown": target / "report.md", "figures": figures_dir}
    for key, text in (("html", render_html(results, sections)), ("markdown", render_markdown(results, sections))):
        tmp = paths[key].with_name(paths[key].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[key])
    return paths


__all__ = ["write_report", "load_report_data", "methods_paragraph", "build_sections", "render_html",
           "render_markdown"]
