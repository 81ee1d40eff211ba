"""Turning a model's free-text answer into a label value, or an honest INVALID.

Small open LLMs, generating freely, rarely answer with exactly the label string the codebook
asks for: they wrap it in markdown, quote it, prefix it with ``Answer:``, pluralise it, explain
themselves in a sentence, emit JSON with single quotes and trailing commas, leak chat tokens such
as ``<|im_end|>``, or run out of tokens half-way through a JSON object. Counting every such answer
as wrong would measure formatting, not coding ability, so this module parses *tolerantly*.

It never *guesses*, though. An answer that names no label, names two labels where one is
expected, names something that is not in the codebook, or is cut off, is INVALID: its label is
``None``, its raw text is kept, and ``error`` says why. It is never mapped to a default or random
label, because that would silently inflate (or deflate) agreement with the human coders; the
evaluation reports the invalid rate separately.

Label values follow the project conventions:

- ``single``: ``str``, the canonical label name;
- ``multi``: ``tuple[str, ...]`` of canonical names, in codebook order, without duplicates;
- ``dimensions``: ``dict[str, str]`` ``{dimension name: scale value}`` with only the dimensions
  that are present.

`answer_text` is the inverse: the canonical answer a model should produce for a label value (used
to build fine-tuning targets and few-shot examples). ``parse_answer(answer_text(x)).label == x``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from annotune.codebook import Codebook, normalise

LabelValue = str | tuple[str, ...] | dict[str, str]


@dataclass(frozen=True)
class ParsedAnswer:
    """One parsed model answer. ``label is None`` means INVALID; ``raw`` is always the input."""

    label: str | tuple[str, ...] | dict[str, str] | None  # None = INVALID
    raw: str
    error: str | None = None  # why it is invalid (short, human readable), None when valid

    @property
    def valid(self) -> bool:
        return self.label is not None


def _invalid(raw: str, error: str) -> ParsedAnswer:
    return ParsedAnswer(None, raw, error)


def _short(text: str, limit: int = 40) -> str:
    """A quoted, shortened rendering of a piece of answer for error messages."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


# ---------------------------------------------------------------------------------- clean-up
# End-of-turn / end-of-text tokens: the answer ends there, whatever follows is noise.
_END_TOKENS = (
    "<|im_end|>",
    "</s>",
    "<|eot_id|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "<|eom_id|>",
)
_START_TOKENS = re.compile(
    r"<\|im_start\|>\s*(?:assistant\b)?|<\|start_header_id\|>.*?<\|end_header_id\|>|<s>|<bos>"
    r"|<start_of_turn>\s*(?:model\b)?|<\|assistant\|>",
    re.S,
)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```[A-Za-z0-9_+.-]*[ \t]*\n?(.*?)```", re.S)
_OPEN_FENCE = re.compile(r"^\s*```[A-Za-z0-9_+.-]*[ \t]*\n?")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__", re.S)
_ITALIC = re.compile(r"(?<![\w*])\*(?![\s*])(.+?)(?<![\s*])\*(?![\w*])|(?<!\w)_(?![\s_])(.+?)(?<![\s_])_(?!\w)")
_QUOTES = "\"'`“”‘’«»„"
_TRAILING = ".!?,;:…"
_PREFIX = re.compile(
    r"""^(?:
        (?:here\s+is\s+|here's\s+)?
        (?:the\s+|my\s+)?
        (?:final\s+|correct\s+|predicted\s+|most\s+likely\s+|best\s+)?
        (?:answer|labels?|categor(?:y|ies)|topics?|classification|class(?:es)?|output|prediction|response)
        \s*(?:(?:is|are|would\s+be|:|=|-|–|—)\s*)+
    )""",
    re.I | re.X,
)


def _strip_chat(text: str) -> str:
    """Remove chat-template artefacts and reasoning blocks; cut at the first end-of-turn token."""
    for tok in _END_TOKENS:
        pos = text.find(tok)
        if pos >= 0:
            text = text[:pos]
    text = _THINK.sub(" ", text)
    low = text.lower()
    if "<think>" in low:  # reasoning never closed: no answer was given
        text = text[: low.index("<think>")]
    text = text.replace("</think>", " ").replace("</THINK>", " ")
    return _START_TOKENS.sub(" ", text)


def _strip_fences(text: str) -> str:
    """Keep the content of the first markdown code fence (or drop a fence left unclosed)."""
    m = _FENCE.search(text)
    if m:
        return m.group(1)
    text = _OPEN_FENCE.sub("", text)
    return text.replace("```", " ")


def _strip_emphasis(text: str) -> str:
    for _ in range(3):
        new = _BOLD.sub(lambda m: m.group(1) or m.group(2), text)
        new = _ITALIC.sub(lambda m: m.group(1) or m.group(2), new)
        if new == text:
            break
        text = new
    return text


def _strip_edges(text: str) -> str:
    """Repeatedly strip whitespace, surrounding quotes/backticks, answer prefixes and trailing
    punctuation, until nothing changes."""
    while True:
        new = text.strip().strip(_QUOTES).strip()
        new = _PREFIX.sub("", new, count=1)
        new = new.rstrip(_TRAILING + " \t\n").strip()
        if new == text:
            return new
        text = new


def _clean(text: str) -> str:
    """The clean-up shared by ``single`` and ``multi`` answers."""
    text = _strip_fences(_strip_chat(text))
    return _strip_edges(_strip_emphasis(text))


# ------------------------------------------------------------------------------ label lookup
def _word_variants(word: str) -> list[str]:
    """Singular/plural variants of one (normalised) word, most specific first."""
    out: list[str] = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss") and len(word) > 2:
        out.append(word[:-1])
    out += [word + "s", word + "es"]
    if word.endswith("y") and len(word) > 2:
        out.append(word[:-1] + "ies")
    return out


def _match_label(codebook: Codebook, text: str) -> str | None:
    """The label a whole string names: exact name/alias (normalised), else a singular/plural
    variant of its last word, provided that variant names exactly one label."""
    hit = codebook.canonical_label(text)
    if hit is not None:
        return hit
    norm = normalise(text)
    if not norm:
        return None
    *head, last = norm.split()
    hits = {codebook.canonical_label(" ".join([*head, v])) for v in _word_variants(last)}
    hits.discard(None)
    return hits.pop() if len(hits) == 1 else None


def _mention_table(codebook: Codebook) -> dict[str, str]:
    """Normalised phrase -> label, for finding label mentions inside a sentence.

    Names and aliases, plus plural forms and (for words of 4+ letters) singular forms of their last
    word. A variant never overrides a real name or alias, and a variant claimed by two labels is
    dropped."""
    table: dict[str, str] = {}
    for lab in codebook.labels:
        for key in (lab.name, *lab.aliases):
            table[normalise(key)] = lab.name
    variants: dict[str, set[str]] = {}
    for key, name in list(table.items()):
        *head, last = key.split()
        for v in _word_variants(last):
            if len(v) < 4:
                continue
            variants.setdefault(" ".join([*head, v]), set()).add(name)
    for key, names in variants.items():
        if key not in table and len(names) == 1:
            table[key] = next(iter(names))
    return table


def _mentions(codebook: Codebook, text: str) -> list[str]:
    """Distinct labels mentioned as whole words/phrases in ``text``, in order of appearance."""
    table = _mention_table(codebook)
    norm = normalise(text)
    if not norm:
        return []
    keys = sorted(table, key=len, reverse=True)  # longest phrase wins at each position
    pattern = re.compile(r"(?<!\S)(?:" + "|".join(re.escape(k) for k in keys) + r")(?!\S)")
    found: list[str] = []
    for m in pattern.finditer(norm):
        name = table[m.group(0)]
        if name not in found:
            found.append(name)
    return found


# --------------------------------------------------------------------------- tolerant JSON
class _Obj(dict):
    """A JSON object that remembers its key/value pairs in order, duplicates included."""

    pairs: list[tuple[str, Any]]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    obj.pairs = list(pairs)
    return obj


_CLOSER = {"{": "}", "[": "]"}


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket block opening at ``start`` (string-aware, ``'`` and ``"``),
    or None when it is never closed (truncated) or closed by the wrong bracket."""
    stack: list[str] = []
    quote: str | None = None
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            # an apostrophe inside a bare word (it's) does not open a string
            if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum():
                pass
            else:
                quote = c
        elif c in _CLOSER:
            stack.append(_CLOSER[c])
        elif c in "}]":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return i + 1
        i += 1
    return None


def _repair_json(text: str) -> str:
    """Rewrite near-JSON (single quotes, trailing commas, Python literals, curly double quotes)
    into JSON. Raises ValueError on an unterminated string."""
    text = text.replace("“", '"').replace("”", '"')
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            buf: list[str] = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j : j + 2])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated string")
            content = "".join(buf)
            if c == "'":
                content = content.replace("\\'", "'")
                content = re.sub(r'(?<!\\)"', r'\\"', content)
            out.append('"' + content + '"')
            i = j + 1
            continue
        if c == ",":
            k = i + 1
            while k < n and text[k].isspace():
                k += 1
            if k < n and text[k] in "}]":
                i += 1
                continue
        if c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            out.append({"True": "true", "False": "false", "None": "null"}.get(word, word))
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _loads(block: str) -> tuple[bool, Any]:
    """Parse a JSON-ish block: strict JSON, then repaired JSON, then a Python literal."""
    try:
        return True, json.loads(block, object_pairs_hook=_pairs_hook)
    except (ValueError, RecursionError):
        pass
    try:
        return True, json.loads(_repair_json(block), object_pairs_hook=_pairs_hook)
    except (ValueError, RecursionError):
        pass
    try:
        return True, ast.literal_eval(block)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _json_block(text: str, opener: str = "{[") -> tuple[str, Any, str | None]:
    """Find and parse the first bracket block in ``text`` whose opener is in ``opener``.

    Returns ``(status, value, block)`` with status ``"ok"``, ``"none"`` (no opener at all),
    ``"truncated"`` (never closed) or ``"bad"`` (closed but not parseable)."""
    starts = sorted(p for p in (text.find(o) for o in opener) if p >= 0)
    if not starts:
        return "none", None, None
    status = "none"
    for start in starts:
        end = _balanced_end(text, start)
        if end is None:
            status = "truncated" if status == "none" else status
            continue
        ok, value = _loads(text[start:end])
        if ok:
            return "ok", value, text[start:end]
        status = "bad"
    return status, None, None


# ----------------------------------------------------------------------------------- single
_SINGLE_KEYS = ("label", "category", "topic", "answer", "class", "classification", "prediction")


def _single_from_json(value: Any, codebook: Codebook) -> tuple[str | None, str | None]:
    """(label, error) for a parsed JSON single-label answer."""
    if isinstance(value, dict):
        if len(value) == 1:
            value = next(iter(value.values()))
        else:
            lowered = {normalise(str(k)): v for k, v in value.items()}
            for key in _SINGLE_KEYS:
                if key in lowered:
                    value = lowered[key]
                    break
            else:
                return None, "JSON object has no 'label' field"
    if isinstance(value, list):
        if not value:
            return None, "empty list, expected one label"
        names: list[str] = []
        for item in value:
            if not isinstance(item, str):
                return None, f"list item {_short(json.dumps(item, ensure_ascii=False))} is not a label"
            name = _match_label(codebook, _strip_edges(item))
            if name is None:
                return None, f"unknown label {_short(item)}"
            if name not in names:
                names.append(name)
        if len(names) > 1:
            return None, f"expected one label, got {len(names)}: {', '.join(names)}"
        return names[0], None
    if isinstance(value, str):
        cleaned = _strip_edges(_strip_emphasis(value))
        if not cleaned:
            return None, "empty label"
        name = _match_label(codebook, cleaned)
        if name is None:
            return None, f"unknown label {_short(cleaned)}"
        return name, None
    return None, f"expected a label, got {_short(json.dumps(value, ensure_ascii=False))}"


def _parse_single(raw: str, codebook: Codebook) -> ParsedAnswer:
    text = _clean(raw)
    if not text:
        return _invalid(raw, "empty answer")
    name = _match_label(codebook, text)
    if name is not None:
        return ParsedAnswer(name, raw)
    if text[0] in "{[":
        end = _balanced_end(text, 0)
        if end is None:
            return _invalid(raw, "truncated or malformed JSON")
        ok, value = _loads(text[:end])
        if ok:
            label, error = _single_from_json(value, codebook)
            return ParsedAnswer(label, raw) if label else _invalid(raw, error or "invalid JSON answer")
        # balanced but not JSON, e.g. "[tech]": fall through to mention search
    # a first line that is exactly a label, followed by an explanation
    lines = [ln for ln in (_strip_edges(x) for x in text.splitlines()) if ln]
    if len(lines) > 1:
        name = _match_label(codebook, lines[0])
        if name is not None:
            return ParsedAnswer(name, raw)
    found = _mentions(codebook, text)
    if len(found) == 1:
        return ParsedAnswer(found[0], raw)
    if len(found) > 1:
        return _invalid(raw, f"ambiguous: mentions {', '.join(found)}")
    return _invalid(raw, f"no known label in {_short(text)}")


# ------------------------------------------------------------------------------------ multi
_MULTI_KEYS = ("labels", "label", "categories", "category", "topics", "topic", "answer", "answers")
_BULLET = re.compile(r"^\s*(?:[-*•+·]|\d{1,2}[.)]|\(\d{1,2}\))\s+")
_AND = re.compile(r"\s+(?:and|&|\+)\s+|\s*&\s*", re.I)
_LEADING_AND = re.compile(r"^(?:and|&)\s+", re.I)


def _multi_items_from_json(value: Any) -> tuple[list[Any] | None, str | None]:
    if isinstance(value, dict):
        lowered = {normalise(str(k)): v for k, v in value.items()}
        for key in _MULTI_KEYS:
            if key in lowered:
                return _multi_items_from_json(lowered[key])
        lists = [v for v in value.values() if isinstance(v, (list, str))]
        if len(value) == 1 and lists:
            return _multi_items_from_json(lists[0])
        if value and all(isinstance(v, bool) for v in value.values()):  # {"tech": true, ...}
            return [k for k, v in value.items() if v], None
        return None, "JSON object has no 'labels' list"
    if isinstance(value, list):
        return list(value), None
    if isinstance(value, str):
        return _split_items(value), None
    return None, f"expected a list of labels, got {_short(json.dumps(value, ensure_ascii=False))}"


def _split_items(text: str) -> list[str]:
    """Split a plain-text list (bullets, numbers, commas, semicolons, new lines)."""
    items: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line)
        items.extend(re.split(r"[,;]", line))
    return items


def _parse_multi(raw: str, codebook: Codebook) -> ParsedAnswer:
    text = _clean(raw)
    if not text:
        return _invalid(raw, "empty answer")
    items: list[Any] | None = None
    if text[0] in "{[":
        end = _balanced_end(text, 0)
        if end is None:
            return _invalid(raw, "truncated or malformed JSON")
        ok, value = _loads(text[:end])
        if ok:
            items, error = _multi_items_from_json(value)
            if items is None:
                return _invalid(raw, error or "invalid JSON answer")
        elif text[0] == "[" and end == len(text):  # [business, tech]: a bracketed plain list
            items = _split_items(text[1:-1])
        else:
            return _invalid(raw, "malformed JSON")
    else:
        m = re.search(r"\[\s*[\"']", text)  # a JSON list after some words
        if m:
            status, value, _ = _json_block(text[m.start() :], "[")
            if status == "ok" and isinstance(value, list):
                items = list(value)
            elif status == "truncated":
                return _invalid(raw, "truncated JSON list")
    if items is None:
        items = _split_items(text)

    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            return _invalid(raw, f"list item {_short(json.dumps(item, ensure_ascii=False))} is not a label")
        piece = _LEADING_AND.sub("", _strip_edges(_strip_emphasis(_BULLET.sub("", item))))
        if not piece:
            continue
        name = _match_label(codebook, piece)
        if name is not None:
            names.append(name)
            continue
        for part in _AND.split(piece):
            part = _strip_edges(part)
            if not part:
                continue
            name = _match_label(codebook, part)
            if name is None:
                return _invalid(raw, f"unknown label {_short(part)}")
            names.append(name)
    distinct = set(names)
    if not distinct:
        return _invalid(raw, "no labels")
    limit = codebook.max_labels or len(codebook.labels)
    if len(distinct) > limit:
        return _invalid(raw, f"too many labels ({len(distinct)} > max {limit})")
    return ParsedAnswer(tuple(n for n in codebook.label_names if n in distinct), raw)


# ------------------------------------------------------------------------------- dimensions
_ABSENT = {"", "none", "absent", "n a", "na", "null", "nil", "not present", "not applicable", "no", "false", "0"}
_WRAPPERS = {"dimensions", "labels", "label", "answer", "output", "result", "results", "annotations", "annotation"}
_DIM_KEYS = ("dimension", "name", "label", "dim", "key")
_VALUE_KEYS = ("value", "intensity", "level", "score", "rating")
_ABSENT_MARK = object()


def _field(obj: dict, keys: tuple[str, ...]) -> tuple[bool, Any]:
    lowered = {normalise(str(k)): v for k, v in obj.items()}
    for key in keys:
        if key in lowered:
            return True, lowered[key]
    return False, None


def _dim_value(value: Any, codebook: Codebook) -> Any:
    """The canonical scale value, ``_ABSENT_MARK``, or None when the value is not on the scale."""
    if isinstance(value, dict):
        found, inner = _field(value, _VALUE_KEYS)
        return _dim_value(inner, codebook) if found else None
    if value is None or value is False:
        return _ABSENT_MARK
    if value is True or isinstance(value, (list, tuple)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    hit = codebook.canonical_value(text)
    if hit is not None:
        return hit
    if normalise(text) in _ABSENT:
        return _ABSENT_MARK
    return None


def _parse_dimensions(raw: str, codebook: Codebook) -> ParsedAnswer:
    text = _strip_fences(_strip_chat(raw)).strip()
    if not text:
        return _invalid(raw, "empty answer")
    status, value, _ = _json_block(text)
    if status == "none":
        return _invalid(raw, "no JSON object found")
    if status == "truncated":
        return _invalid(raw, "truncated JSON (never closed)")
    if status == "bad":
        return _invalid(raw, "malformed JSON")

    # {"dimensions": {...}} wrapper
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if (
            isinstance(inner, (dict, list))
            and normalise(str(key)) in _WRAPPERS
            and _match_label(codebook, str(key)) is None
        ):
            value = inner

    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(getattr(value, "pairs", value.items()))
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, dict):
                return _invalid(raw, "expected a JSON object of dimensions")
            has_dim, dim = _field(item, _DIM_KEYS)
            has_val, val = _field(item, _VALUE_KEYS)
            if not has_dim:
                return _invalid(raw, f"list entry without a dimension: {_short(json.dumps(item, ensure_ascii=False))}")
            if not has_val:
                return _invalid(raw, f"list entry without a value for {_short(dim)}")
            pairs.append((dim, val))
    else:
        return _invalid(raw, "expected a JSON object of dimensions")

    seen: dict[str, Any] = {}
    for key, val in pairs:
        if not isinstance(key, str):
            key = str(key)
        dim = _match_label(codebook, key)
        if dim is None:
            return _invalid(raw, f"unknown dimension {_short(key)}")
        canon = _dim_value(val, codebook)
        if canon is None:
            shown = val if isinstance(val, str) else json.dumps(val, ensure_ascii=False, default=str)
            return _invalid(raw, f"unknown value {_short(shown)} for {dim!r}")
        if dim in seen and seen[dim] != canon:
            return _invalid(raw, f"conflicting values for {dim!r}")
        seen[dim] = canon
    label = {d: seen[d] for d in codebook.label_names if d in seen and seen[d] is not _ABSENT_MARK}
    return ParsedAnswer(label, raw)


# -------------------------------------------------------------------------------- public API
def parse_answer(text: str, codebook: Codebook) -> ParsedAnswer:
    """Parse a model's answer for ``codebook``; INVALID answers have ``label=None`` and an error."""
    raw = "" if text is None else str(text)
    if codebook.kind == "single":
        return _parse_single(raw, codebook)
    if codebook.kind == "multi":
        return _parse_multi(raw, codebook)
    if codebook.kind == "dimensions":
        return _parse_dimensions(raw, codebook)
    raise ValueError(f"unknown task kind {codebook.kind!r}")


def answer_text(label: LabelValue, codebook: Codebook) -> str:
    """The canonical answer string a model should produce for ``label`` (a valid label value).

    single: the label name; multi: a JSON list in codebook order; dimensions: a one-line JSON
    object in codebook order. Raises ValueError for a value that does not fit the codebook."""
    if codebook.kind == "single":
        if not isinstance(label, str) or codebook.canonical_label(label) is None:
            raise ValueError(f"not a label of {codebook.name!r}: {label!r}")
        return codebook.canonical_label(label)  # type: ignore[return-value]
    if codebook.kind == "multi":
        if isinstance(label, str) or not isinstance(label, (tuple, list, set, frozenset)):
            raise ValueError(f"a multi-label value must be a tuple of labels, not {label!r}")
        names = set()
        for item in label:
            name = codebook.canonical_label(item) if isinstance(item, str) else None
            if name is None:
                raise ValueError(f"not a label of {codebook.name!r}: {item!r}")
            names.add(name)
        if not names:
            raise ValueError("a multi-label value needs at least one label")
        return json.dumps([n for n in codebook.label_names if n in names], ensure_ascii=False)
    if codebook.kind == "dimensions":
        if not isinstance(label, dict):
            raise ValueError(f"a dimensions value must be a dict, not {label!r}")
        out: dict[str, str] = {}
        for key, val in label.items():
            dim = codebook.canonical_label(key) if isinstance(key, str) else None
            if dim is None:
                raise ValueError(f"not a dimension of {codebook.name!r}: {key!r}")
            canon = codebook.canonical_value(val) if isinstance(val, str) else None
            if canon is None:
                raise ValueError(f"{val!r} is not on the scale {codebook.scale}")
            out[dim] = canon
        ordered = {d: out[d] for d in codebook.label_names if d in out}
        return json.dumps(ordered, ensure_ascii=False)
    raise ValueError(f"unknown task kind {codebook.kind!r}")
