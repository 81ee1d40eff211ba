"""Terminal rendering of annotune's results: the comparison table, the learning curve, the API plan."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from annotune.cli.app import console


def print_results_table(results: dict) -> None:
    from annotune.experiments.results import table_rows

    header, rows = table_rows(results)
    kind = results["task"]["task"]["kind"]
    table = Table(title=escape(f"{results['name']} — {kind} task, {results['data']['test']} test documents"))
    for i, h in enumerate(header):
        table.add_column(escape(h), justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    console.print(table)


def print_curve_table(curve: dict) -> None:
    """One table per answer mode (mean over seeds with its interval, per size), then where the fine-tuned
    model matches each reference."""
    from annotune.report.format import PRIMARY_NAMES, line_label, ci_text as _ci, size_label as _size_label

    primary = PRIMARY_NAMES.get(curve["primary"], curve["primary"])
    for answer, block in curve["answers"].items():
        table = Table(title=escape(f"{curve['name']} — learning curve, {line_label(curve, answer)}, "
                                   f"{curve['data']['test']} test documents"))
        for i, h in enumerate(["Train docs", "Seeds", f"Mean {primary} [95% CI]", "SD", "Per seed", "Valid %",
                               "Train s"]):
            table.add_column(escape(h), justify="left" if i == 0 else "right")
        for r in block["rows"]:
            table.add_row(escape(_size_label(r["size"], r["n_train"])), str(len(r["seeds"])),
                          _ci(r["mean"], r.get("ci")), "–" if r.get("sd") is None else f"{r['sd']:.3f}",
                          ", ".join(f"{v:.3f}" for v in r["values"]), f"{100 * r['valid_rate']:.1f}",
                          "–" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}")
        console.print(table)
        for m in block["matches"]:
            if m["reference"] == answer:  # a trained reference's own line against itself says nothing
                continue
            bm, bc = m.get("by_mean"), m.get("by_ci")
            line = f"  vs {m['reference']} ({m['reference_value']:.3f}): "
            line += (f"mean ≥ reference from {_size_label(bm['size'], bm['n_train'])} documents "
                     f"({_ci(bm['mean'], bm.get('ci'))})" if bm else "mean never ≥ reference")
            line += (f"; 95% CI lower bound ≥ reference from {_size_label(bc['size'], bc['n_train'])}" if bc
                     else "; 95% CI lower bound never ≥ reference")
            console.print(line, markup=False, highlight=False)


def usd(x) -> str:
    return "–" if x is None else f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def print_plan_table(name: str, plans: list[dict]) -> None:
    """The API plan: requests, tokens and cost per system, then notes."""
    table = Table(title=escape(f"{name} — plan for API systems (nothing sent)"))
    for i, h in enumerate(["System", "Model", "Requests", "Cached", "Input tokens", "Output tokens (est.)", "Cost",
                           "Batch API", "To pay now", "$/1k docs", "Price date"]):
        table.add_column(h, justify="left" if i < 2 else "right")
    for p in plans:
        table.add_row(escape(p["name"]), escape(p["model"]), str(p["requests"]), str(p["cached_requests"]),
                      f"{p['input_tokens']:,}" + ("" if p["token_counts"] == "exact" else " ~"),
                      f"{p['output_tokens']:,} ~", usd(p["cost_usd"]), usd(p["cost_usd_batch"]),
                      usd(p["cost_usd_remaining"]),
                      "–" if p["cost_per_1k_docs"] is None else f"{p['cost_per_1k_docs']:.4f}",
                      escape(str((p["price"] or {}).get("date") or "–")))
    console.print(table)
    total = [p["cost_usd"] for p in plans]
    if all(t is not None for t in total):
        console.print(f"total: {usd(sum(total))}; ~ marks estimates", markup=False, highlight=False)
    for p in plans:
        for note in p["notes"]:
            console.print(f"{p['name']}: {note}", markup=False, highlight=False)
