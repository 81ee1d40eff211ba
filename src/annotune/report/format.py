"""Number and name formatting shared by the report, its templates and the CLI's curve table, and the task
kind of a results dict (`results_task`, `primary_key`): what the report says differently per kind comes
from the kind's class (`annotune.tasks`), never from a branch on its name.

Every helper returns "–" for a missing value, so that tables never show "None".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotune.tasks import TaskKind, get_task, task_names


def _primary_names() -> dict[str, str]:
    """{primary metric key: its readable name} of every registered task kind."""
    return {get_task(k).primary_metric: get_task(k).primary_name for k in task_names()}


PRIMARY_NAMES = _primary_names()  # the kinds registered at import; `primary_name` also sees later plug-ins
DEFAULT_MODEL = "smollm2"  # what a local system runs when neither it nor the config names a model
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
MISSING = "–"


def primary_name(key: str) -> str:
    """The readable name of a metric key (``macro_f1`` → ``macro-F1``); unknown keys as they are."""
    return PRIMARY_NAMES.get(key) or _primary_names().get(key, key)


def results_task(results: dict) -> type[TaskKind]:
    """The task kind class of a results dict (its report wording, per-label figures, primary metric)."""
    return get_task(results["task"]["task"]["kind"])


def primary_key(results: dict) -> str:
    """The metrics key of the task's headline metric, as `evaluate` and `curve` stored it."""
    for s in results.get("systems", []):
        if s.get("metrics", {}).get("primary"):
            return s["metrics"]["primary"]
    if results.get("curve", {}).get("primary"):
        return results["curve"]["primary"]
    return results_task(results).primary_metric


def curve_matches(curve: dict | None) -> Iterator[tuple[str, dict, dict, dict | None, dict | None]]:
    """(answer mode, its curve block, reference match, ``by_mean``, ``by_ci``) for every reference a learning
    curve was compared with (nothing without a curve)."""
    for answer, block in (curve["answers"].items() if curve else ()):
        for mt in block["matches"]:
            if mt["reference"] != answer:  # a trained reference's own line against itself says nothing
                yield answer, block, mt, mt.get("by_mean"), mt.get("by_ci")


def line_label(curve: dict, answer: str) -> str:
    """What a learning-curve line is: ``fine-tuned (generate answers)``, or a trained reference system that
    was also run at every size (``“tf-idf + logistic regression”``)."""
    if answer in ((curve.get("curve") or {}).get("trained_systems") or []):
        return f"“{answer}”"
    return f"fine-tuned ({answer} answers)"


def curve_trained(curve: dict) -> str:
    """What a learning curve trained at every size, as a verb phrase: ``fine-tuned SmolLM2-135M-Instruct with
    LoRA``, or (a curve without LoRA points) ``trained “smollm2 head” and “tf-idf”``."""
    c = curve["curve"]
    if c.get("answers", True):
        return f"fine-tuned {model_name(curve['base_model'])} with LoRA"
    return "trained " + join_words([line_label(curve, name) for name in c.get("trained_systems") or []])


def fixed(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals."""
    return MISSING if x is None else f"{x:.{digits}f}"


def percent(x: Any) -> str:
    """A share (0–1) as a percentage with one decimal, without the sign."""
    return MISSING if x is None else f"{100 * x:.1f}"


def ci_text(value: Any, ci: Any) -> str:
    """``0.812 [0.780, 0.845]``: a value with its interval (just the value when there is none)."""
    if value is None:
        return MISSING
    if ci and ci[0] is not None:
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{value:.3f}"


def number(x: Any, digits: int = 1) -> str:
    """A count or a measurement with thousands separators; floats ≥ 100 without decimals."""
    if x is None:
        return MISSING
    if isinstance(x, float) and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def size_label(size: Any, n_train: int) -> str:
    """A learning-curve size: ``1,000``, or ``all (4,321)`` for the whole training pool."""
    return f"all ({n_train:,})" if size == "all" else f"{n_train:,}"


def slug(name: str) -> str:
    """A file-name-safe form of a system name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "figure"


def join_words(items: list[str]) -> str:
    """``a, b and c`` (empty items left out)."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def plural(n: int, word: str) -> str:
    """``word`` followed by "s" unless ``n`` is 1."""
    return word + "s" * (n != 1)


def model_name(spec: str | None) -> str:
    """A readable name for a model spec: the embedded model's real name, a folder's name, a hub id."""
    from annotune.backends.models import EMBEDDED_ALIASES, EMBEDDED_ENCODER_ALIASES

    if not spec:
        return f"the default model ({DEFAULT_MODEL_NAME})"
    if spec.strip().lower() in EMBEDDED_ALIASES:
        return DEFAULT_MODEL_NAME
    if spec.strip().lower() in EMBEDDED_ENCODER_ALIASES:
        return "all-MiniLM-L6-v2"
    path = Path(spec)
    if path.is_absolute() or spec.startswith((".", "~")):
        return path.name or spec
    return spec


def system_model(spec: dict) -> str:
    """The readable model name of a local system, from its stored spec (results.json written before specs
    carried their model: the embedded default)."""
    return model_name(spec.get("model") or DEFAULT_MODEL)


def hardware_words(hw: dict) -> str:
    """``Intel Xeon (16 cores, 128 GiB RAM) with 1× NVIDIA H200``."""
    words = f"{hw.get('cpu', 'an unknown CPU')} ({hw.get('cpu_count', '?')} cores"
    if hw.get("memory_gib"):
        words += f", {hw['memory_gib']} GiB RAM"
    words += ")"
    if hw.get("gpu"):
        words += f" with {hw.get('gpu_count', 1)}× {hw['gpu']}"
    return words


def md_cell(x: Any) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return str(x).replace("|", "\\|").replace("\n", " ")


__all__ = ["PRIMARY_NAMES", "DEFAULT_MODEL", "DEFAULT_MODEL_NAME", "primary_name",
           "results_task", "primary_key", "curve_matches", "fixed",
           "percent", "ci_text", "line_label", "number", "size_label", "slug", "join_words", "plural", "model_name",
           "system_model", "hardware_words", "md_cell"]
