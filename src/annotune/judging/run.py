"""`judge_file`: judge the answer columns of a data file (open question answering) and measure the judge
(the engine of ``annotune judge``).

Each row holds a question, usually a reference answer, and one column per system's answer. Every answer
column is judged against the reference, ``repeats`` times (`Judge`):

- alone (one answer per judge call) by default; an answer column that *is* the reference column is
  judged with ``show_reference`` off (a judge shown the answer as its own reference would grade a copy);
- with ``pairwise``, exactly two columns judged together in one call, shown in both orders over the
  repeats (A B, B A, …), which gives the judge's position bias (`pair_position_bias`); the per-column
  numbers then come from those joint verdicts.

Per column: the mean score per criterion and overall with a 95 % interval over items
(`judgement_stats`), the judge's own spread over repeats, unparsed verdicts (counted, never scored) with
their reasons, the mean answer length, the length bias (Spearman ρ of item scores and lengths) and,
with human grades, judge–human agreement (Spearman ρ, Krippendorff's α). The result is a JSON-able
dict holding all of that and, per item, every repeat's verdict with the judge's raw output.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Callable

from annotune.errors import ConfigError, DataError
from annotune.judging.judge import Judge, Judgement, judgement_stats, pair_position_bias, unparsed_reasons
from annotune.judging.rubric import Rubric
from annotune.judging.scores import agreement, length_bias


def load_rubric(path: str | Path) -> Rubric:
    """A `Rubric` from a TOML file: a ``[rubric]`` table, or the rubric's keys at the top level
    (``criteria = [{name = ..., description = ...}]``, ``scale_min``, ``scale_max``, ``show_reference``,
    ``instructions``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("rubric file not found", file=str(path))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not a valid TOML file: {exc}", file=str(path)) from None
    where = ""
    if isinstance(data.get("rubric"), dict):
        data, where = data["rubric"], "rubric"
    return Rubric.parse(data, file=str(path), where=where)


def parse_human_fields(values: list[str] | None, answers: list[str]) -> dict[str, str]:
    """``--human-field`` values as {answer column: human grade column}: ``COL`` (one answer column only)
    or ``ANSWER=COL`` (repeatable)."""
    out: dict[str, str] = {}
    for value in values or []:
        answer, sep, column = value.partition("=")
        if not sep:
            if len(answers) != 1:
                raise ConfigError(f"with several answer columns, write --human-field ANSWER=COLUMN (not {value!r})",
                                  field="--human-field")
            answer, column = answers[0], value
        answer, column = answer.strip(), column.strip()
        if answer not in answers or not column:
            raise ConfigError(f"--human-field {value!r}: {answer!r} is not one of the --answers columns "
                              f"({', '.join(answers)})", field="--human-field")
        out[answer] = column
    return out


def _text(value: Any) -> str | None:
    from annotune.data.readers import is_missing, scalar_str

    if is_missing(value):
        return None
    return value if isinstance(value, str) else scalar_str(value)


def _grade(value: Any, file: str, row: int, field: str) -> float | None:
    from annotune.data.readers import is_missing

    if is_missing(value):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(f"a human grade must be a number, not {value!r}", file=file, row=row, field=field) from None
    if math.isnan(out) or math.isinf(out) or isinstance(value, bool):
        raise DataError(f"a human grade must be a number, not {value!r}", file=file, row=row, field=field)
    return out


def _repeat_json(rep, names: list[str]) -> dict:
    """One judge call as JSON, with answers named by column (``order``: the columns in the order shown)."""
    return {"order": [names[i] for i in rep.order], "scores": {names[i]: s for i, s in rep.scores.items()},
            "expected": {names[i]: s for i, s in rep.expected.items()},
            "mass": {names[i]: s for i, s in rep.mass.items()}, "error": rep.error, "raw": rep.raw,
            "truncated": rep.truncated, "n_tokens": rep.n_tokens, "logprobs": rep.logprobs, "reused": rep.reused,
            "seconds": round(rep.seconds, 4)}


def column_stats(judgements: list[Judgement], slot: int, criteria: list[str], lengths: list[int],
                 human: list[float | None] | None = None) -> dict:
    """The summary of one judged answer column (answer ``slot`` of each judgement): per criterion and overall
    mean, interval and the judge's spread, the expected score, unparsed verdicts, length bias, agreement with
    human grades."""
    overall = judgement_stats(judgements, answer=slot)
    expected = judgement_stats(judgements, answer=slot, expected=True)
    out = {
        "items": len(judgements),
        "criteria": {c: {"mean": (st := judgement_stats(judgements, answer=slot, criterion=c)).mean,
                         "ci": st.ci, "judge_sd": st.judge_sd} for c in criteria},
        "overall": {k: v for k, v in overall.as_dict().items() if k not in ("item_sds",)},
        "expected": {"mean": expected.mean, "ci": expected.ci, "items_scored": expected.items_scored,
                     "judge_sd": expected.judge_sd, "item_means": expected.item_means},
        "judgements": overall.judgements,
        "unparsed": overall.unparsed,
        "mean_length_chars": sum(lengths) / len(lengths) if lengths else None,
        "length_bias": length_bias(overall.item_means, lengths).as_dict(),
        "human": None,
    }
    if human is not None:
        out["human"] = agreement(overall.item_means, human).as_dict()
        out["human"]["graded"] = sum(h is not None for h in human)
    return out


def judge_file(path: str | Path, answers: list[str], *, judge: Judge | Callable[[], Judge], question_field: str = "question",
               reference_field: str | None = "answer", pairwise: bool = False,
               human_fields: dict[str, str] | None = None, limit: int | None = None, progress: bool = False,
               log: Callable[[str], None] | None = None, judge_info: dict | None = None) -> dict:
    """Judge each of the ``answers`` columns of the data file at ``path`` with ``judge`` (see the module
    docstring; a function making the judge is called once the file and its columns are checked, and the
    judge it made is closed at the end); returns the summary per column, the position bias (``pairwise``), and every item's repeats
    with the raw judge outputs. A missing column is a `DataError` naming the file and field;
    ``reference_field=None``: no reference is shown."""
    from annotune.data.readers import find_column, read_records

    fname = str(path)
    answers = list(dict.fromkeys(answers or []))
    if not answers:
        raise ConfigError("name at least one answer column (--answers COL)", field="--answers")
    if pairwise and len(answers) != 2:
        raise ConfigError(f"--pairwise judges exactly two answer columns together, not {len(answers)} "
                          f"({', '.join(answers)}): pass --answers twice", field="--pairwise")
    if limit is not None and limit < 1:
        raise ConfigError("limit must be >= 1", field="--limit")
    human_fields = dict(human_fields or {})
    records, columns = read_records(path)
    qcol = find_column(columns, question_field, fname, "--question-field")
    rcol = find_column(columns, reference_field, fname, "--reference-field") if reference_field else None
    acols = {a: find_column(columns, a, fname, "--answers") for a in answers}
    hcols = {a: find_column(columns, h, fname, "--human-field") for a, h in human_fields.items()}
    if limit is not None:
        records = records[:limit]

    items = []
    for row, rec in records:
        question = _text(rec.get(qcol))
        if question is None:
            raise DataError("the question is empty", file=fname, row=row, field=qcol)
        items.append({"row": row, "question": question, "reference": _text(rec.get(rcol)) if rcol else None,
                      "answers": {a: _text(rec.get(c)) for a, c in acols.items()},
                      "human": {a: _grade(rec.get(c), fname, row, c) for a, c in hcols.items()}})

    made = not isinstance(judge, Judge)
    if made:
        judge = judge()
    try:
        return _judge_items(fname, items, answers, judge, qcol, rcol, acols, hcols, pairwise, progress, log,
                            judge_info)
    finally:
        if made:
            judge.close()


def reference_hidden(judge: Judge) -> Judge:
    """``judge`` with the reference answer hidden (to grade the reference answers themselves: shown as their
    own reference, they would be graded as a copy); the same backend, nothing reloaded."""
    if not judge.rubric.show_reference:
        return judge
    hidden = judge.rubric.model_copy(update={"show_reference": False})
    return Judge(judge.backend, rubric=hidden, repeats=judge.repeats, seed=judge.seed, structured=judge.structured)


def _judge_items(fname, items, answers, judge, qcol, rcol, acols, hcols, pairwise, progress, log, judge_info) -> dict:
    from tqdm.auto import tqdm

    if pairwise and judge.repeats < 2:
        raise ConfigError("--pairwise needs --repeats 2 or more to show both orders", field="--repeats")

    def judge_for(cols: list[str]) -> Judge:
        """The judge, with the reference hidden where a judged column is the reference itself."""
        if rcol is None or not any(acols[c] == rcol for c in cols):
            return judge
        return reference_hidden(judge)

    groups = [answers] if pairwise else [[a] for a in answers]
    results: dict[str, Any] = {}
    position = None
    for cols in groups:
        title = " vs ".join(cols)
        j = judge_for(cols)
        todo = [it for it in items if all(it["answers"][c] is not None for c in cols)]
        if log:
            log(f"judging {title}: {len(todo)} items x {j.repeats} repeats"
                + (f" ({len(items) - len(todo)} without an answer skipped)" if len(todo) < len(items) else ""))
        done = [j.judge(it["question"], [it["answers"][c] for c in cols], it["reference"])
                for it in tqdm(todo, desc=f"judge {title}", disable=not progress)]
        for it, jm in zip(todo, done):
            it.setdefault("judgements", {})[title] = {
                "answers": cols, "show_reference": j.rubric.show_reference and it["reference"] is not None,
                "unparsed": jm.unparsed, "repeats": [_repeat_json(r, cols) for r in jm.repeats]}
        for slot, col in enumerate(cols):
            lengths = [len(it["answers"][col]) for it in todo]
            human = [it["human"][col] for it in todo] if col in hcols else None
            st = column_stats(done, slot, j.rubric.names, lengths, human)
            st["missing"] = len(items) - len(todo)
            st["mean_length_words"] = (sum(len(it["answers"][col].split()) for it in todo) / len(todo)
                                       if todo else None)
            st["show_reference"] = j.rubric.show_reference and rcol is not None
            st["unparsed_reasons"] = unparsed_reasons(done)  # of this column's judge calls (shared when pairwise)
            results[col] = st
        if pairwise:
            position = {"overall": pair_position_bias(done).as_dict(),
                        "criteria": {c: pair_position_bias(done, c).as_dict() for c in j.rubric.names}}

    for it in items:
        it.setdefault("judgements", {})
    return {
        "file": fname,
        "question_field": qcol,
        "reference_field": rcol,
        "answers": answers,
        "human_fields": {a: hcols[a] for a in hcols},
        "pairwise": pairwise,
        "rows": len(items),
        "judge": {**(judge_info or {}), "backend_name": getattr(judge.backend, "name", None),
                  "repeats": judge.repeats, "seed": judge.seed, "structured": judge.structured,
                  "rubric": judge.rubric.settings()},
        "criteria": judge.rubric.names,
        "columns": results,
        "position_bias": position,
        "items": items,
    }


__all__ = ["column_stats", "judge_file", "load_rubric", "parse_human_fields", "reference_hidden"]
