"""Tolerant-but-never-guessing parsing of model answers (annotune.parsing)."""

from __future__ import annotations

import itertools
import random

import pytest

from annotune.codebook import Codebook
from annotune.tasks.parsing import ParsedAnswer, answer_text, parse_answer

INVALID = None


def _labels(*names, aliases=None):
    aliases = aliases or {}
    return [{"name": n, "definition": f"About {n}.", "aliases": aliases.get(n, [])} for n in names]


SINGLE = Codebook.from_dict(
    {
        "task": {"name": "bbc", "kind": "single"},
        "labels": _labels(
            "business", "entertainment", "politics", "sport", "tech", aliases={"tech": ["technology"]}
        ),
    }
)

MULTI = Codebook.from_dict(
    {
        "task": {"name": "topics", "kind": "multi", "max_labels": 2},
        "labels": _labels("business", "politics", "sport", "tech", "arts and culture"),
    }
)

DIMS = Codebook.from_dict(
    {
        "task": {"name": "flourishing", "kind": "dimensions", "scale": ["low", "medium", "high"]},
        "labels": _labels(
            "expressing gratitude",
            "belonging to society",
            "happiness",
            "perceiving discrimination",
            aliases={"happiness": ["being happy"]},
        ),
    }
)


# ------------------------------------------------------------------------------------ single
SINGLE_CASES = [
    ("business", "business"),
    ("Business", "business"),
    ("  SPORT  \n", "sport"),
    ("Tech.", "tech"),
    ("tech!!", "tech"),
    ("Technology", "tech"),  # alias
    ("technologies", "tech"),  # plural of an alias
    ("Sports", "sport"),  # plural
    ("businesses", "business"),
    ("politics", "politics"),  # a label that ends in -s itself
    ("Politic", "politics"),
    ("Answer: tech", "tech"),
    ("Category: Entertainment", "entertainment"),
    ("Topic - sport", "sport"),
    ("The answer is: **Business**.", "business"),
    ("The category is politics", "politics"),
    ("**Answer:** *sport*", "sport"),
    ('"tech"', "tech"),
    ("`business`", "business"),
    ("“Entertainment”", "entertainment"),
    ("```\ntech\n```", "tech"),
    ('```json\n{"label": "tech"}\n```', "tech"),
    ('{"label": "technology"}', "tech"),
    ("{'category': 'Sports'}", "sport"),
    ('{"label": "tech", "confidence": 0.9}', "tech"),
    ('["tech"]', "tech"),
    ("[tech]", "tech"),
    ("sport<|im_end|>\n<|im_start|>user\npolitics", "sport"),
    ("business</s>", "business"),
    ("tech<|eot_id|>garbage", "tech"),
    ("<think>maybe politics or business</think>\nbusiness", "business"),
    ("This article is about business.", "business"),
    ("I think it's sport", "sport"),
    ("The article discusses new technologies in phones.", "tech"),
    ("Business\n\nThe article describes a merger and the politics around it.", "business"),
    # INVALID
    ("", INVALID),
    ("   \n ", INVALID),
    ("<|im_end|>", INVALID),
    ("The article is about politics, not business", INVALID),  # ambiguous
    ("business, tech", INVALID),
    ("It could be tech or business.", INVALID),
    ("science", INVALID),  # not in the codebook
    ("Answer: weather", INVALID),
    ("I cannot classify this text.", INVALID),
    ('["tech", "business"]', INVALID),
    ("[]", INVALID),
    ('{"label": "science"}', INVALID),
    ('{"label": "tech"', INVALID),  # truncated JSON
    ('{"reason": "x", "score": 3}', INVALID),
    ("<think>it is clearly sport, I think", INVALID),  # reasoning never finished
    ("technological", INVALID),
    ("news", INVALID),
]


@pytest.mark.parametrize("text,expected", SINGLE_CASES)
def test_single(text, expected):
    got = parse_answer(text, SINGLE)
    assert isinstance(got, ParsedAnswer)
    assert got.raw == text
    assert got.label == expected, got.error
    assert got.valid is (expected is not None)
    if expected is None:
        assert got.error
    else:
        assert got.error is None


# ------------------------------------------------------------------------------------- multi
MULTI_CASES = [
    ('["business", "tech"]', ("business", "tech")),
    ('["tech", "business"]', ("business", "tech")),  # codebook order
    ("['Tech', 'Sports']", ("sport", "tech")),
    ('{"labels": ["politics", "tech"]}', ("politics", "tech")),
    ('```json\n["sport"]\n```', ("sport",)),
    ("sport", ("sport",)),
    ("business, tech", ("business", "tech")),
    ("business; politics.", ("business", "politics")),
    ("business and tech", ("business", "tech")),
    ("business, and tech", ("business", "tech")),
    ("- Business\n- Tech", ("business", "tech")),
    ("* sport\n* politics", ("politics", "sport")),
    ("1. tech\n2. sport", ("sport", "tech")),
    ("Labels: sport, Sports, SPORT", ("sport",)),  # duplicates collapse (plural)
    ("arts and culture", ("arts and culture",)),  # " and " inside a label name
    ("arts and culture, sport", ("sport", "arts and culture")),
    ("[business, tech]", ("business", "tech")),
    ('["business", "tech",]', ("business", "tech")),  # trailing comma
    ('Here are the labels: ["politics", "business"]', ("business", "politics")),
    ("**politics**, **tech**<|im_end|>", ("politics", "tech")),
    ('{"business": true, "tech": true, "sport": false}', ("business", "tech")),
    # INVALID
    ("", INVALID),
    ("[]", INVALID),
    ("business, tech, sport", INVALID),  # more than max_labels=2
    ('["business", "tech", "politics"]', INVALID),
    ("business, weather", INVALID),  # unknown item
    ("none", INVALID),
    ('["business", "tech"', INVALID),  # truncated
    ('["business", 3]', INVALID),
    ("This article is about business and tech.", INVALID),
    ('{"reason": "because"}', INVALID),
]


@pytest.mark.parametrize("text,expected", MULTI_CASES)
def test_multi(text, expected):
    got = parse_answer(text, MULTI)
    assert got.raw == text
    assert got.label == expected, got.error
    assert (got.error is None) is (expected is not None)


def test_multi_error_names_unknown_item():
    got = parse_answer("business, weather", MULTI)
    assert "weather" in got.error
    assert "too many" in parse_answer("business, tech, sport", MULTI).error


# -------------------------------------------------------------------------------- dimensions
GR, BS, HA, PD = "expressing gratitude", "belonging to society", "happiness", "perceiving discrimination"

DIMS_CASES = [
    ('{"happiness": "high"}', {HA: "high"}),
    ("{}", {}),
    ('{"Happiness": "HIGH", "Expressing Gratitude": "low"}', {GR: "low", HA: "high"}),
    ('```json\n{"belonging to society": "medium"}\n```', {BS: "medium"}),
    ("Sure! Here is the JSON:\n{\"happiness\": \"low\"}\nHope this helps {smile}", {HA: "low"}),
    ("{'happiness': 'high', 'perceiving discrimination': 'low'}", {HA: "high", PD: "low"}),  # single quotes
    ('{"happiness": "high",}', {HA: "high"}),  # trailing comma
    ("{'happiness': 'medium', 'expressing gratitude': None}", {HA: "medium"}),  # Python dict
    ('{"happiness": null, "expressing gratitude": "none", "belonging to society": "absent"}', {}),
    ('{"happiness": "n/a", "perceiving discrimination": "", "expressing gratitude": 0}', {}),
    ('{"happiness": false, "belonging to society": "High."}', {BS: "high"}),
    ('{"being happy": "medium"}', {HA: "medium"}),  # alias
    ('{"expressing gratitudes": "low"}', {GR: "low"}),  # plural tolerance on keys
    ('{"happiness": "high", "Happiness": "high"}', {HA: "high"}),  # duplicate, same value
    ('{"happiness": {"value": "low", "evidence": "she smiles"}}', {HA: "low"}),
    ('{"dimensions": {"happiness": "low"}}', {HA: "low"}),  # wrapper object
    (
        '[{"dimension": "happiness", "value": "high"}, {"dimension": "belonging to society", "intensity": "low"}]',
        {BS: "low", HA: "high"},
    ),
    ("[]", {}),
    ('{"happiness": "high"}<|im_end|>{"happiness": "low"}', {HA: "high"}),
    ('{"perceiving discrimination": "medium", "note": "it\'s {odd}"}', INVALID),  # unknown key "note"
    # INVALID
    ("", INVALID),
    ("none of the dimensions apply", INVALID),  # no JSON
    ('"happiness"', INVALID),
    ('["happiness", "high"]', INVALID),  # non-object JSON
    ('{"happiness": "high", "belonging to soc', INVALID),  # truncated
    ('{"happiness": "high", "expressing gratitude": ', INVALID),
    ('{"hapiness": "high"}', INVALID),  # unknown dimension (typo)
    ('{"happiness": "very high"}', INVALID),  # unknown value
    ('{"happiness": 3}', INVALID),  # no guessing an index on the scale
    ('{"happiness": true}', INVALID),
    ('{"happiness": "high", "happiness": "low"}', INVALID),  # conflicting duplicate
    ('{"happiness": "high" "belonging to society": "low"}', INVALID),  # missing comma
    ('[{"dimension": "happiness"}]', INVALID),  # no value
    ('{"happiness": ["high"]}', INVALID),
]


@pytest.mark.parametrize("text,expected", DIMS_CASES)
def test_dimensions(text, expected):
    got = parse_answer(text, DIMS)
    assert got.raw == text
    assert got.label == expected, got.error
    assert (got.error is None) is (expected is not None)


def test_dimensions_errors_name_the_problem():
    assert "hapiness" in parse_answer('{"hapiness": "high"}', DIMS).error
    assert "very high" in parse_answer('{"happiness": "very high"}', DIMS).error
    assert "truncated" in parse_answer('{"happiness": "hi', DIMS).error
    assert "conflicting" in parse_answer('{"happiness": "high", "Happiness": "low"}', DIMS).error


def test_dimensions_output_in_codebook_order():
    got = parse_answer('{"perceiving discrimination": "low", "expressing gratitude": "high"}', DIMS)
    assert list(got.label) == [GR, PD]


def test_scale_value_named_none_is_a_value():
    cb = Codebook.from_dict(
        {
            "task": {"name": "d", "kind": "dimensions", "scale": ["none", "some", "lots"]},
            "labels": _labels("joy", "fear"),
        }
    )
    assert parse_answer('{"joy": "none", "fear": null}', cb).label == {"joy": "none"}


# ------------------------------------------------------------------------------ round trips
def test_round_trip_single():
    for name in SINGLE.label_names:
        assert answer_text(name, SINGLE) == name
        assert parse_answer(answer_text(name, SINGLE), SINGLE).label == name
    assert answer_text("Technology", SINGLE) == "tech"


def test_round_trip_multi():
    for k in (1, 2):
        for combo in itertools.combinations(MULTI.label_names, k):
            text = answer_text(combo, MULTI)
            assert text.startswith("[") and "\n" not in text
            assert parse_answer(text, MULTI).label == combo
    assert answer_text(("tech", "business"), MULTI) == '["business", "tech"]'


def test_round_trip_dimensions():
    rng = random.Random(0)
    for _ in range(50):
        dims = rng.sample(DIMS.label_names, rng.randint(0, len(DIMS.label_names)))
        value = {d: rng.choice(DIMS.scale) for d in DIMS.label_names if d in dims}
        text = answer_text(value, DIMS)
        assert "\n" not in text
        assert parse_answer(text, DIMS).label == value
    assert answer_text({HA: "high", GR: "low"}, DIMS) == '{"expressing gratitude": "low", "happiness": "high"}'
    assert answer_text({}, DIMS) == "{}"


def test_round_trip_non_ascii():
    cb = Codebook.from_dict(
        {"task": {"name": "fr", "kind": "dimensions", "scale": ["faible", "élevé"]}, "labels": _labels("bien-être", "sécurité")}
    )
    value = {"bien-être": "élevé"}
    text = answer_text(value, cb)
    assert text == '{"bien-être": "élevé"}'
    assert parse_answer(text, cb).label == value


@pytest.mark.parametrize(
    "value,cb",
    [("science", SINGLE), (("weather",), MULTI), ((), MULTI), ("business", MULTI), ({"x": "high"}, DIMS), ({HA: "huge"}, DIMS)],
)
def test_answer_text_rejects_invalid_values(value, cb):
    with pytest.raises(ValueError):
        answer_text(value, cb)


# ------------------------------------------------------------------------------- robustness
def test_never_raises_on_garbage():
    rng = random.Random(1)
    alphabet = list('{}[]"\',:;\n -*`<|>/\\ab') + ["tech", "happiness", "high", "null", "<|im_end|>", "```"]
    for _ in range(600):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        for cb in (SINGLE, MULTI, DIMS):
            got = parse_answer(text, cb)
            assert got.raw == text
            assert (got.label is None) is (got.error is not None)


@pytest.mark.parametrize("text", ["{1, 2}", "[{1, 2}]", '{"tech"}', "{'a', 'b'}", "[{'tech'}]"])
def test_python_set_literals_are_invalid_not_a_crash(text):
    # ast.literal_eval turns these into sets, which once crashed the error message (json.dumps of a set)
    for cb in (SINGLE, MULTI, DIMS):
        got = parse_answer(text, cb)
        assert got.raw == text
        assert (got.label is None) is (got.error is not None)
    assert parse_answer("{1, 2}", SINGLE).error == "expected a label, got '[1, 2]'"
    assert not parse_answer('{"tech"}', MULTI).valid


def test_parse_answer_is_the_codebook_task_parser():
    for cb, text in ((SINGLE, "Tech."), (MULTI, '["sport", "business"]'), (DIMS, '{"happiness": "high"}')):
        assert parse_answer(text, cb) == cb.task.parse(text)
        label = cb.task.parse(text).label
        assert answer_text(label, cb) == cb.task.answer_text(label)
