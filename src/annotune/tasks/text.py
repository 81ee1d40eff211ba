"""Text helpers shared by the task kinds' answer parsers: clean-up, label lookup, tolerant JSON.

Small open LLMs rarely answer with exactly the label string the codebook asks for: they wrap it in
markdown, quote it, prefix it with ``Answer:``, pluralise it, emit JSON with single quotes and trailing
commas, leak chat tokens such as ``<|im_end|>``, or run out of tokens half-way through a JSON object. These
helpers undo that *tolerantly*; each kind's ``parse`` decides what is a valid label (see
``annotune.tasks.parsing`` for the rules).
"""

from __future__ import annotations

import ast
import json
import re
from typing import TYPE_CHECKING, Any

from annotune.tasks.base import ParsedAnswer

if TYPE_CHECKING:
    from annotune.codebook import Codebook


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used to match labels and aliases."""
    out = []
    for ch in text.casefold().strip():
        out.append(ch if ch.isalnum() else " ")
    return " ".join("".join(out).split())


def invalid(raw: str, error: str) -> ParsedAnswer:
    return ParsedAnswer(None, raw, error)


def short(text: str, limit: int = 40) -> str:
    """A quoted, shortened rendering of a piece of answer for error messages."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


def shown(value: Any) -> str:
    """`short` of a parsed JSON-ish value, for error messages (Python set literals included)."""
    return short(json.dumps(value, ensure_ascii=False, default=_plain))


def _plain(value: Any) -> Any:
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


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


def strip_chat(text: str) -> str:
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


def strip_fences(text: str) -> str:
    """Keep the content of the first markdown code fence (or drop a fence left unclosed)."""
    m = _FENCE.search(text)
    if m:
        return m.group(1)
    text = _OPEN_FENCE.sub("", text)
    return text.replace("```", " ")


def strip_emphasis(text: str) -> str:
    for _ in range(3):
        new = _BOLD.sub(lambda m: m.group(1) or m.group(2), text)
        new = _ITALIC.sub(lambda m: m.group(1) or m.group(2), new)
        if new == text:
            break
        text = new
    return text


def strip_edges(text: str) -> str:
    """Repeatedly strip whitespace, surrounding quotes/backticks, answer prefixes and trailing
    punctuation, until nothing changes."""
    while True:
        new = text.strip().strip(_QUOTES).strip()
        new = _PREFIX.sub("", new, count=1)
        new = new.rstrip(_TRAILING + " \t\n").strip()
        if new == text:
            return new
        text = new


def clean(text: str) -> str:
    """The clean-up shared by ``single`` and ``multi`` answers: chat tokens, fences, emphasis, edges."""
    text = strip_fences(strip_chat(text))
    return strip_edges(strip_emphasis(text))


# ------------------------------------------------------------------------------ label lookup
def word_variants(word: str) -> list[str]:
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


def match_label(codebook: Codebook, text: str) -> str | None:
    """The label a whole string names: exact name/alias (normalised), else a singular/plural
    variant of its last word, provided that variant names exactly one label."""
    hit = codebook.canonical_label(text)
    if hit is not None:
        return hit
    norm = normalise(text)
    if not norm:
        return None
    *head, last = norm.split()
    hits = {codebook.canonical_label(" ".join([*head, v])) for v in word_variants(last)}
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
        for v in word_variants(last):
            if len(v) < 4:
                continue
            variants.setdefault(" ".join([*head, v]), set()).add(name)
    for key, names in variants.items():
        if key not in table and len(names) == 1:
            table[key] = next(iter(names))
    return table


def mentions(codebook: Codebook, text: str) -> list[str]:
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


def balanced_end(text: str, start: int) -> int | None:
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


def repair_json(text: str) -> str:
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


def loads(block: str) -> tuple[bool, Any]:
    """Parse a JSON-ish block: strict JSON, then repaired JSON, then a Python literal."""
    try:
        return True, json.loads(block, object_pairs_hook=_pairs_hook)
    except (ValueError, RecursionError):
        pass
    try:
        return True, json.loads(repair_json(block), object_pairs_hook=_pairs_hook)
    except (ValueError, RecursionError):
        pass
    try:
        return True, ast.literal_eval(block)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def json_block(text: str, opener: str = "{[") -> tuple[str, Any, str | None]:
    """Find and parse the first bracket block in ``text`` whose opener is in ``opener``.

    Returns ``(status, value, block)`` with status ``"ok"``, ``"none"`` (no opener at all),
    ``"truncated"`` (never closed) or ``"bad"`` (closed but not parseable)."""
    starts = sorted(p for p in (text.find(o) for o in opener) if p >= 0)
    if not starts:
        return "none", None, None
    status = "none"
    for start in starts:
        end = balanced_end(text, start)
        if end is None:
            status = "truncated" if status == "none" else status
            continue
        ok, value = loads(text[start:end])
        if ok:
            return "ok", value, text[start:end]
        status = "bad"
    return status, None, None
