"""A comparison's ``[judge]`` table: every system's answers to a free-text (``qa``) task graded by an LLM judge.

After the systems ran, each system's valid answers are judged against the test documents' reference answers
(`annotune.judging.Judge`: the rubric, ``repeats``, expected scores from log-probabilities); a ``reference``
system's answers — the reference answers themselves — are judged with the reference hidden. Every system's
metrics gain ``judge_score`` (mean over its judged answers, 1–10 by default, with a 95 % interval),
``judge_expected`` (the probability-weighted score where the judge gives log-probabilities), ``judge_sd``
(the judge's own spread over repeats), ``judge_unparsed`` (verdicts that could not be read, counted and never
scored) and ``judge_judged``; the full verdicts go to ``systems/<name>.judge.json``, reused while the system's
answers and the judge's settings are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from annotune.data.dataset import Dataset
from annotune.errors import ConfigError
from annotune.experiments.fingerprints import fingerprint, slug
from annotune.experiments.results import load_finished, write_atomic

JUDGE_SUFFIX = ".judge.json"


def check_judge(cfg) -> None:
    """A ``[judge]`` table grades free-text answers: refuse it for a task that has labels."""
    if cfg.judge is not None and not cfg.codebook.task.open_answers:
        raise ConfigError(f"[judge] grades free-text answers (a codebook of kind \"qa\"), not a "
                          f"{cfg.codebook.kind!r} task's labels", file=cfg.source, field="judge")


def judge_records(cfg, records: list[dict], test: Dataset, out: Path, *, progress: bool = True,
                  log: Callable[[str], None] = print) -> None:
    """Judge every record's answers (see the module docstring); adds the judge's figures to each record's
    metrics in place."""
    from tqdm.auto import tqdm

    from annotune.judging import Judge, column_stats, reference_hidden

    if cfg.judge is None:
        return
    docs = {d.id: d for d in test.docs}
    settings = cfg.judge.settings()
    judge = None
    try:
        for rec in records:
            fp = fingerprint(rec["fingerprint"], settings)
            store = out / "systems" / f"{slug(rec['name'])}{JUDGE_SUFFIX}"
            saved = load_finished(store, fp)
            if saved is None:
                if judge is None:
                    judge = Judge.from_config(cfg.judge)
                own = reference_hidden(judge) if rec["type"] == "reference" else judge
                answered = [p for p in rec["predictions"] if p["label"] is not None and p["id"] in docs]
                log(f"{rec['name']}: judging {len(answered)} answers x {own.repeats} repeats …")
                done = [own.judge(docs[p["id"]].text, [p["label"]], docs[p["id"]].label)
                        for p in tqdm(answered, desc=f"judge {rec['name']}", disable=not progress, leave=False)]
                stats = column_stats(done, 0, own.rubric.names, [len(p["label"]) for p in answered])
                saved = {"fingerprint": fp, "system": rec["name"], "judge": settings,
                         "show_reference": own.rubric.show_reference, "stats": stats,
                         "items": [{"id": p["id"], "scores": j.scores(0), "criteria": [r.scores.get(0) for r in
                                                                                    j.repeats],
                                    "expected": j.scores(0, expected=True), "errors": [r.error for r in j.repeats],
                                    "raw": [r.raw for r in j.repeats]} for p, j in zip(answered, done)]}
                write_atomic(store, saved)
            else:
                log(f"{rec['name']}: reusing the judge's verdicts from {store}")
            stats = saved["stats"]
            overall = stats["overall"]
            rec["metrics"].update({
                "judge_score": overall.get("mean"), "judge_score_ci": overall.get("ci"),
                "judge_expected": stats["expected"]["mean"], "judge_expected_ci": stats["expected"]["ci"],
                "judge_sd": overall.get("judge_sd"),
                "judge_unparsed": stats["unparsed"], "judge_calls": stats["judgements"], "judge_judged": stats["items"],
                "judge_show_reference": saved["show_reference"],
                "judge_items": overall.get("item_means"),
                "judge_expected_items": stats["expected"].get("item_means"),
            })
    finally:
        if judge is not None:
            judge.close()


def judge_summary(results: dict) -> dict:
    """What the report and the CLI show of a judged comparison: per system, the judge's figures."""
    return {s["name"]: {k: v for k, v in s["metrics"].items() if k.startswith("judge_") and not k.endswith("_items")}
            for s in results["systems"] if "judge_score" in s.get("metrics", {})}


__all__ = ["JUDGE_SUFFIX", "check_judge", "judge_records", "judge_summary"]
