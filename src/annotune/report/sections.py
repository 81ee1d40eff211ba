"""The report as a document: sections of paragraphs, tables, lists and figures, built from results.json
(and the learning curve under ``results["curve"]``). Only the templates decide how blocks look.

Sections, in order: summary, comparison, confusion matrices, per-label F1, learning curve, cost and
throughput, reproducibility manifest, methods paragraph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

from annotune.report.figures import (Figure, answer_scores_figure, confusion_figure, curve_figure,
                                     per_class_figure, throughput_figure)
from annotune.report.format import (ci_text, curve_matches, curve_trained, fixed, hardware_words, line_label,
                                    number, percent, plural, primary_key, primary_name, results_task,
                                    size_label)
from annotune.report.methods import methods_paragraph


# ---------------------------------------------------------------------------- blocks
@dataclass
class _Text:
    """A block of one text; subclasses name its ``kind`` (what the templates switch on)."""

    kind: ClassVar[str]
    text: str


class Paragraph(_Text):
    kind = "paragraph"


class Heading(_Text):
    kind = "heading"


class Quote(_Text):
    kind = "quote"


class Preformatted(_Text):
    kind = "pre"


@dataclass
class BulletList:
    kind: ClassVar[str] = "list"
    items: list[str]


@dataclass
class Table:
    kind: ClassVar[str] = "table"
    header: list[str]
    rows: list[list[str]]

    @property
    def key_value(self) -> bool:
        """A two-column table of items and values (long values wrap)."""
        return len(self.header) == 2


@dataclass
class Figures:
    kind: ClassVar[str] = "figures"
    figures: list[Figure]
    layout: str = ""  # "grid": two per row


Block = Paragraph | Heading | Quote | Preformatted | BulletList | Table | Figures


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self

    @property
    def figures(self) -> list[Figure]:
        return [f for b in self.blocks if isinstance(b, Figures) for f in b.figures]


# ---------------------------------------------------------------------------- sections
def summary_section(results: dict) -> Section:
    sec = Section("summary", "Summary")
    items = []
    primary = primary_key(results)
    pname = primary_name(primary)
    systems = results["systems"]
    if systems:
        best = max(systems, key=lambda s: s["metrics"].get(primary) or 0)
        m = best["metrics"]
        items.append(f"Best system on {results['data']['test']:,} test documents: {best['name']} "
                     f"({pname} {ci_text(m.get(primary), m.get(primary + '_ci'))}, valid answers "
                     f"{percent(m['valid_rate'])} %).")
    for answer, block, mt, bm, bc in curve_matches(results.get("curve")):
        ref = f"{mt['reference']} ({mt['reference_value']:.3f})"
        if bm:
            text = (f"{line_label(results['curve'], answer)} reaches {ref} on average from "
                    f"{size_label(bm['size'], bm['n_train'])} labelled documents ({pname} "
                    f"{ci_text(bm['mean'], bm.get('ci'))})")
            text += (f"; with its 95 % interval above it from {size_label(bc['size'], bc['n_train'])}."
                     if bc else "; its 95 % interval never lies entirely above it.")
        else:
            largest = block["rows"][-1] if block["rows"] else None
            text = f"{line_label(results['curve'], answer)} does not reach {ref} at any size tried"
            text += (f" (largest: {size_label(largest['size'], largest['n_train'])} documents, "
                     f"{ci_text(largest['mean'], largest.get('ci'))})." if largest else ".")
        items.append(text)
    if items:
        sec.add(BulletList(items))
    return sec


def comparison_section(results: dict) -> Section:
    from annotune.experiments.results import table_rows

    sec = Section("comparison", "Comparison")
    if not results["systems"]:
        return sec.add(Paragraph("No systems were compared."))
    header, rows = table_rows(results)
    sec.add(Table(header, rows), Paragraph(
        f"All systems labelled the same {results['data']['test']:,} held-out test documents. Unparseable answers "
        "are INVALID: kept in every denominator and counted as wrong (“Acc (all)”); “Acc (valid)” scores only "
        "the parseable answers. Intervals: 95 % percentile bootstrap over test documents."))
    warnings = [f"{s['name']}: {w}" for s in results["systems"] for w in s["metrics"].get("warnings") or []]
    if warnings:
        sec.add(Heading("Warnings"), BulletList(warnings))
    return sec


def confusion_section(results: dict) -> Section:
    """Confusion matrices of the systems whose metrics have one (`evaluate` stores them for single-label
    tasks)."""
    sec = Section("confusion", "Confusion matrices")
    systems = [s for s in results["systems"] if s["metrics"].get("confusion")]
    if not systems:
        return sec.add(Paragraph("Confusion matrices apply to single-label tasks; see the per-label scores below."))
    return sec.add(Paragraph("Rows: gold label; columns: predicted label, with unparseable answers in the red "
                             "INVALID column. Numbers are documents; colour is the share of the gold row."),
                   Figures([confusion_figure(s) for s in systems], "grid"))


def per_class_section(results: dict) -> Section:
    task = results_task(results)
    if task.open_answers:
        return answer_scores_section(results)
    sec = Section("per-class", f"Per-{task.item_word} F1")
    fig = per_class_figure(results)
    if fig is None:
        return sec.add(Paragraph("No per-label scores."))
    systems = [s for s in results["systems"] if task.per_item_scores(s.get("metrics", {}))]
    scores = [task.per_item_scores(s["metrics"]) for s in systems]
    labels = list(scores[0])
    support = {lab: v.get("support") for lab, v in systems[0]["metrics"][task.per_item_key].items()}
    header = [task.item_word.capitalize(), "Support", *[s["name"] for s in systems]]
    rows = [[lab, str(support.get(lab, "–")), *[fixed(sc.get(lab)) for sc in scores]]
            for lab in labels]
    return sec.add(Figures([fig]), Table(header, rows))


def answer_scores_section(results: dict) -> Section:
    """Open answers: how ROUGE-L and the judge's scores are distributed over the questions."""
    sec = Section("answer-scores", "Score distributions")
    fig = answer_scores_figure(results)
    if fig is None:
        return sec.add(Paragraph("No per-question scores."))
    text = ("ROUGE-L: the longest common subsequence of answer and reference (F1, stemmed), a judge-free check "
            "that rewards wording close to the reference.")
    if results.get("judge"):
        text += (" Judge: the mean verdict per question over the rubric's criteria and the repeats; the "
                 "probability-weighted score weights every score by the judge's probability for it.")
    return sec.add(Figures([fig]), Paragraph(text))


def curve_section(results: dict) -> Section:
    sec = Section("learning-curve", "Learning curve")
    curve = results.get("curve")
    if not curve:
        return sec.add(Paragraph("No learning curve in this folder (run `annotune curve` with a [curve] table)."))
    primary = primary_name(curve["primary"])
    c = curve["curve"]
    trained = curve_trained(curve)
    sec.add(Figures([curve_figure(curve)]), Paragraph(
        f"At each size annotune {trained} on seeded stratified subsamples of the training "
        f"split ({curve['data']['train_pool']:,} documents), {len(c['seeds'])} {plural(len(c['seeds']), 'seed')} "
        f"per size ({', '.join(map(str, c['seeds']))}); every model is scored on the same "
        f"{curve['data']['test']:,} test documents. “95 % CI”: percentile bootstrap over test documents "
        f"({curve['n_boot']:,} resamples) of the mean over seeds; “SD”: standard deviation over seeds (training "
        "data and initialisation); “seed CI”: t-interval of the mean over seeds."))
    for answer, block in curve["answers"].items():
        header = ["Train docs", "Seeds", f"Mean {primary} [95% CI]", "SD", "Seed CI", "Per seed", "Valid %",
                  "Train s", "Train tok/s"]
        rows = [[size_label(r["size"], r["n_train"]), str(len(r["seeds"])), ci_text(r["mean"], r.get("ci")),
                 fixed(r.get("sd")), f"[{r['seed_ci'][0]:.3f}, {r['seed_ci'][1]:.3f}]" if r.get("seed_ci") else "–",
                 ", ".join(f"{v:.3f}" for v in r["values"]), percent(r.get("valid_rate")),
                 number(r.get("train_seconds")), number(r.get("train_tokens_per_s"), 0)] for r in block["rows"]]
        sec.add(Heading(line_label(curve, answer)), Table(header, rows))
        if any(m["reference"] != answer for m in block["matches"]):  # not a trained line against itself
            sec.add(Table(["Reference", f"Reference {primary} [95% CI]", "Smallest size: mean ≥ reference",
                           f"Mean {primary} [95% CI] there", "Difference [95% CI]",
                           "Smallest size: CI lower bound ≥ reference"],
                          [_match_row(m) for m in block["matches"] if m["reference"] != answer]))
    return sec.add(Paragraph("“Mean ≥ reference”: the smallest size whose mean over seeds reaches the reference's "
                             "value. “CI lower bound ≥ reference”: the smallest size whose 95 % interval lies "
                             "entirely at or above it. The difference interval is a paired bootstrap (the same "
                             "resampled test documents for both)."))


def _match_row(m: dict) -> list[str]:
    bm, bc = m.get("by_mean"), m.get("by_ci")
    difference = "–"
    if bm:
        difference = f"{bm['difference']:+.3f}"
        if bm.get("difference_ci"):
            difference += f" [{bm['difference_ci'][0]:+.3f}, {bm['difference_ci'][1]:+.3f}]"
    return [m["reference"], ci_text(m["reference_value"], m.get("reference_ci")),
            size_label(bm["size"], bm["n_train"]) if bm else "not reached",
            ci_text(bm["mean"], bm.get("ci")) if bm else "–", difference,
            size_label(bc["size"], bc["n_train"]) if bc else "not reached"]


def cost_section(results: dict) -> Section:
    sec = Section("cost", "Cost and throughput")
    rows = []
    for s in results["systems"]:
        st = s["stats"]
        rows.append([s["name"], number(st.get("docs_per_s")), number(st.get("seconds")),
                     number(st.get("prompt_tokens_per_s"), 0), number(st.get("generated_tokens")),
                     number(st.get("train_seconds")), number(st.get("train_tokens_per_s"), 0),
                     f"{st['cost_usd']:.4f}" if st.get("cost_usd") is not None else "–"])
    if rows:
        sec.add(Table(["System", "Docs/s", "Seconds", "Prompt tok/s", "Generated tokens", "Train s", "Train tok/s",
                       "Cost USD"], rows))
    curve = results.get("curve")
    if curve:
        sec.add(Paragraph(f"Learning curve: {len(curve['points'])} points, {curve.get('train_seconds_total', 0):,.0f} s "
                          f"of training as recorded by their runs (reused runs included), {curve['seconds']:,.0f} s "
                          "of wall time in the invocation that finished the curve."))
    hw = results.get("environment", {}).get("hardware", {})
    if hw:
        sec.add(Paragraph(f"Measured on {hardware_words(hw)}. Throughput is wall-clock and includes tokenisation "
                          "and parsing; “Prompt tok/s” counts the full prompt of every document, as an API would "
                          "bill it."))
    fig = throughput_figure(results)
    if fig is not None:
        sec.add(Figures([fig]))
    return sec


CONFIG_TEXT_LIMIT = 200_000  # characters; a larger config file is left out of the manifest


def manifest_section(results: dict) -> Section:
    sec = Section("manifest", "Reproducibility manifest")
    data = results.get("data", {})
    task = results["task"]["task"]
    rows = [["Comparison", results.get("name", "")], ["Config", results.get("config", "")],
            ["Created", results.get("created", "")], ["Seed", str(results.get("seed", ""))],
            ["Task", f"{task['name']} ({task['kind']}, {len(results['task']['labels'])} labels)"],
            ["Documents", (f"{data.get('documents', '–')} ({data.get('dropped_empty', 0)} empty and "
                           f"{data.get('dropped_duplicates', 0)} duplicates dropped)")],
            ["Train / test", f"{data.get('train', '–')} / {data.get('test', '–')}"],
            ["Test ids sha256", data.get("test_ids_sha256", "–")]]
    curve = results.get("curve")
    if curve:
        rows += [["Curve sizes", ", ".join(map(str, curve["curve"]["sizes"]))],
                 ["Curve seeds", ", ".join(map(str, curve["curve"]["seeds"]))],
                 *([["Curve base model", curve["base_model"]]] if curve["curve"].get("answers", True) else []),
                 ["Bootstrap resamples", str(curve["n_boot"])]]
    sec.add(Table(["Item", "Value"], rows))
    env = results.get("environment", {})
    if env.get("libraries"):
        sec.add(Heading("Libraries"),
                Table(["Package", "Version"], [[k, v or "not installed"] for k, v in env["libraries"].items()]))
    if env.get("hardware"):
        sec.add(Heading("Hardware"), Table(["Item", "Value"], [[k, str(v)] for k, v in env["hardware"].items()]))
    if results["systems"]:
        sec.add(Heading("Systems (settings as run, with fingerprints)"), Preformatted(json.dumps(
            [{"name": s["name"], "fingerprint": s.get("fingerprint"), "spec": s.get("spec")}
             for s in results["systems"]], indent=2, ensure_ascii=False)))
    if curve:
        sec.add(Heading("Learning curve settings"), Preformatted(json.dumps(
            {"curve": curve["curve"], "finetune": curve.get("finetune"), "hyperparameters": _curve_hparams(curve)},
            indent=2, ensure_ascii=False)))
    config_text = results.get("config_text")  # stored by compare; older results.json files do not have it
    if isinstance(config_text, str) and config_text.strip() and len(config_text) < CONFIG_TEXT_LIMIT:
        sec.add(Heading("Config file (as run)"), Preformatted(config_text))
    return sec


def _curve_hparams(curve: dict) -> dict | None:
    for p in curve.get("points", []):
        hp = p.get("training", {}).get("hyperparameters")
        if hp:
            return {k: v for k, v in hp.items() if k != "seed"}
    return None


def methods_section(results: dict) -> Section:
    return Section("methods", "Methods paragraph").add(
        Paragraph("Generated from the manifest; check it and adapt it to your paper."),
        Quote(methods_paragraph(results)))


SECTIONS = (summary_section, comparison_section, confusion_section, per_class_section, curve_section, cost_section,
            manifest_section, methods_section)


def build_sections(results: dict) -> list[Section]:
    """The report's sections, in order."""
    return [make(results) for make in SECTIONS]


__all__ = ["Paragraph", "Heading", "Quote", "Preformatted", "BulletList", "Table", "Figures", "Block", "Section",
           "SECTIONS", "build_sections"]
