"""Codebook validation: every mistake a researcher can make in a codebook file gives a CodebookError
that names the file and the field, and valid codebooks load the same from TOML, YAML and dicts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from annotune.codebook import Codebook, Label, normalise
from annotune.errors import AnnotuneError, CodebookError

from conftest import make_codebook


def labels(*names: str) -> list[dict]:
    return [{"name": n, "definition": f"about {n}"} for n in names]


def build(kind: str = "single", labels_=None, **task) -> Codebook:
    return Codebook.from_dict({"task": {"name": "t", "kind": kind, **task},
                               "labels": labels_ if labels_ is not None else labels("a", "b", "c")},
                              source="cb.toml")


def error(fn, *args, **kwargs) -> CodebookError:
    with pytest.raises(CodebookError) as info:
        fn(*args, **kwargs)
    exc = info.value
    assert isinstance(exc, AnnotuneError)
    assert "\n" not in exc.format()
    return exc


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


TOML = """\
[task]
name = "news"
kind = "multi"
instructions = "Code the article by its topics."
text_field = "body"
label_field = "topics"
id_field = "doc_id"
max_labels = 2

[[labels]]
name = "business"
definition = "companies and markets"
aliases = ["economy"]

[[labels]]
name = "politics"
definition = "government and elections"

[[labels]]
name = "sport"
definition = "matches and athletes"
aliases = ["sports", "athletics"]
"""

YAML = """\
task:
  name: news
  kind: multi
  instructions: Code the article by its topics.
  text_field: body
  label_field: topics
  id_field: doc_id
  max_labels: 2
labels:
  - name: business
    definition: companies and markets
    aliases: [economy]
  - name: politics
    definition: government and elections
  - name: sport
    definition: matches and athletes
    aliases: [sports, athletics]
"""


# ------------------------------------------------------------------------------ duplicates
def test_duplicate_label_names():
    exc = error(build, labels_=labels("a", "b", "a"))
    assert exc.file == "cb.toml" and exc.field == "labels[3].name"
    assert "duplicate label 'a'" in exc.message


@pytest.mark.parametrize("variant", ["Sport", "SPORT", " sport ", "sport!", "sport."])
def test_duplicate_labels_differing_in_case_or_punctuation(variant):
    exc = error(build, labels_=labels("sport", "politics", variant))
    assert exc.field == "labels[3].name"
    assert "duplicate label" in exc.message and "'sport'" in exc.message


def test_labels_differing_in_inner_punctuation_clash():
    exc = error(build, labels_=labels("self-esteem", "politics", "self esteem"))
    assert exc.field == "labels[3].name"
    assert "clashes with label 'self-esteem'" in exc.message


def test_alias_clashing_with_another_label():
    items = labels("business", "tech")
    items[1]["aliases"] = ["technology", "Business"]
    exc = error(build, labels_=items)
    assert exc.field == "labels[2].aliases"
    assert "duplicate alias 'Business'" in exc.message and "clashes with label 'business'" in exc.message


def test_alias_clashing_with_an_earlier_alias():
    items = labels("business", "tech")
    items[0]["aliases"] = ["economy"]
    items[1]["aliases"] = ["ECONOMY"]
    exc = error(build, labels_=items)
    assert exc.field == "labels[2].aliases" and "'ECONOMY'" in exc.message


def test_label_clashing_with_an_earlier_alias():
    items = labels("tech", "technology")
    items[0]["aliases"] = ["technology"]
    exc = error(build, labels_=items)
    assert exc.field == "labels[2].name" and "clashes with label 'tech'" in exc.message


def test_label_without_letters_or_digits():
    exc = error(build, labels_=labels("a", "--"))
    assert exc.field == "labels[2].name" and "no letters or digits" in exc.message


# ------------------------------------------------------------------------------ labels
def test_empty_definition():
    items = labels("a", "b")
    items[1]["definition"] = "   "
    exc = error(build, labels_=items)
    assert exc.field == "labels[2].definition" and "label 'b' has an empty definition" in exc.message


def test_missing_definition():
    exc = error(build, labels_=[{"name": "a", "definition": "x"}, {"name": "b"}])
    assert exc.field == "labels[2].definition"


def test_label_without_a_name():
    exc = error(build, labels_=[{"name": "a", "definition": "x"}, {"definition": "y"}])
    assert exc.field == "labels[2].name" and "without a name" in exc.message


def test_label_given_as_plain_string():
    exc = error(build, labels_=["a", "b"])
    assert exc.field == "labels[1]" and "name and a definition" in exc.message


@pytest.mark.parametrize("items", [[], None])
def test_no_labels(items):
    data = {"task": {"kind": "single"}}
    if items is not None:
        data["labels"] = items
    exc = error(Codebook.from_dict, data, source="cb.toml")
    assert exc.field == "labels" and "no labels" in exc.message


def test_single_needs_two_labels():
    exc = error(build, labels_=labels("only"))
    assert exc.field == "labels" and "at least two labels" in exc.message


def test_unknown_label_key_is_a_typo():
    items = labels("a", "b")
    items[0]["alias"] = ["x"]
    exc = error(build, labels_=items)
    assert exc.field == "labels[1].alias" and "unknown key 'alias'" in exc.message


def test_aliases_must_be_a_list_of_strings():
    items = labels("a", "b")
    items[0]["aliases"] = {"x": 1}
    exc = error(build, labels_=items)
    assert exc.field == "labels[1].aliases"


def test_single_alias_string_is_accepted():
    items = labels("a", "b")
    items[0]["aliases"] = "alpha"
    assert build(labels_=items).labels[0].aliases == ("alpha",)


def test_labels_shorthand_table():
    cb = Codebook.from_dict({"task": {"kind": "single"}, "labels": {"yes": "it is", "no": "it is not"}})
    assert cb.label_names == ["yes", "no"] and cb.labels[0] == Label("yes", "it is")


# ------------------------------------------------------------------------------ task
def test_unknown_kind():
    exc = error(build, kind="multiple")
    assert exc.field == "task.kind" and "unknown task kind 'multiple'" in exc.message
    assert "single, multi, dimensions" in exc.message


@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_codebook_task_is_its_kind_bound_to_it(kind):
    from annotune.tasks import get_task

    cb = make_codebook(kind)
    assert isinstance(cb.task, get_task(kind)) and cb.task.codebook is cb and cb.task.name == kind
    assert cb.task is cb.task  # built once
    assert cb.label_field == get_task(kind).default_label_field and cb.options == {}


def test_kind_must_be_a_string():
    exc = error(build, kind=["single"])
    assert exc.field == "task.kind" and "unknown task kind" in exc.message


def test_unknown_task_key_is_a_typo():
    exc = error(build, kind="multi", maxlabels=2)
    assert exc.field == "task.maxlabels" and "unknown key 'maxlabels'" in exc.message


def test_unknown_top_level_key():
    exc = error(Codebook.from_dict, {"task": {}, "labels": labels("a", "b"), "lables": []}, source="cb.toml")
    assert exc.field == "lables"


def test_task_must_be_a_table():
    exc = error(Codebook.from_dict, {"task": "single", "labels": labels("a", "b")}, source="cb.toml")
    assert exc.field == "task" and exc.message == "[task] must be a table"


def test_max_labels_greater_than_number_of_labels():
    exc = error(build, kind="multi", max_labels=4)
    assert exc.field == "task.max_labels" and "max_labels (4) > number of labels (3)" in exc.message


@pytest.mark.parametrize("value", [0, -1, "2", 1.5, True])
def test_max_labels_must_be_a_positive_integer(value):
    exc = error(build, kind="multi", max_labels=value)
    assert exc.field == "task.max_labels"


def test_max_labels_defaults_to_number_of_labels():
    assert build(kind="multi").max_labels == 3
    assert build(kind="multi", max_labels=3).max_labels == 3


@pytest.mark.parametrize("kind", ["single", "dimensions"])
def test_max_labels_only_for_multi(kind):
    extra = {"scale": ["low", "high"]} if kind == "dimensions" else {}
    exc = error(build, kind=kind, max_labels=2, **extra)
    assert exc.field == "task.max_labels" and f"not {kind!r}" in exc.message


def test_dimensions_without_scale():
    exc = error(build, kind="dimensions")
    assert exc.field == "task.scale" and "needs a scale" in exc.message


@pytest.mark.parametrize("scale", [["low", "high", "Low"], ["low", "low"], ["high", "HIGH!"], ["low", " "]])
def test_duplicate_or_empty_scale_values(scale):
    exc = error(build, kind="dimensions", scale=scale)
    assert exc.field == "task.scale" and "distinct and non-empty" in exc.message


def test_scale_must_be_a_list():
    exc = error(build, kind="dimensions", scale="low, medium, high")
    assert exc.field == "task.scale" and "must be a list" in exc.message


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_scale_only_for_dimensions(kind):
    exc = error(build, kind=kind, scale=["low", "high"])
    assert exc.field == "task.scale"


def test_dimensions_defaults():
    cb = build(kind="dimensions", scale=["low", "medium", "high"], labels_=labels("joy"))
    assert cb.label_field == "labels" and cb.scale == ["low", "medium", "high"]
    assert cb.canonical_value(" HIGH ") == "high" and cb.canonical_value("very high") is None


# ------------------------------------------------------------------------------ files
def test_invalid_toml(tmp_path):
    path = write(tmp_path, "cb.toml", '[task]\nkind = "single\n')
    exc = error(Codebook.load, path)
    assert exc.file == str(path) and exc.message.startswith("invalid TOML")


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "cb.yaml", "task: [unclosed\nlabels: -\n")
    exc = error(Codebook.load, path)
    assert exc.file == str(path) and exc.message.startswith("invalid YAML")


def test_non_utf8_codebook(tmp_path):
    path = tmp_path / "cb.toml"
    path.write_bytes(TOML.replace("companies", "soci\xe9t\xe9s").encode("latin-1"))
    exc = error(Codebook.load, path)
    assert exc.file == str(path) and "not UTF-8" in exc.message


def test_missing_codebook_file(tmp_path):
    exc = error(Codebook.load, tmp_path / "nope.toml")
    assert exc.file == str(tmp_path / "nope.toml") and exc.message == "codebook file not found"


def test_error_in_file_names_the_file(tmp_path):
    path = write(tmp_path, "cb.toml", TOML.replace("max_labels = 2", "max_labels = 7"))
    exc = error(Codebook.load, path)
    assert exc.format() == f"{path}, field 'task.max_labels': max_labels (7) > number of labels (3)"


def test_toml_codebook(tmp_path):
    cb = Codebook.load(write(tmp_path, "news.toml", TOML))
    assert cb.name == "news" and cb.kind == "multi" and cb.max_labels == 2
    assert cb.label_names == ["business", "politics", "sport"]
    assert (cb.text_field, cb.label_field, cb.id_field) == ("body", "topics", "doc_id")
    assert cb.labels[2].aliases == ("sports", "athletics")
    assert cb.instructions == "Code the article by its topics."
    assert cb.source == str(tmp_path / "news.toml")


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_codebook_equals_toml(tmp_path, suffix):
    from_toml = Codebook.load(write(tmp_path, "news.toml", TOML))
    from_yaml = Codebook.load(write(tmp_path, "news" + suffix, YAML))
    assert from_yaml.to_dict() == from_toml.to_dict()
    from_yaml.source = from_toml.source
    assert from_yaml == from_toml


def test_codebook_nested_under_codebook_table(tmp_path):
    nested = TOML.replace("[task]", "[codebook.task]").replace("[[labels]]", "[[codebook.labels]]")
    cb = Codebook.load(write(tmp_path, "cfg.toml", nested))
    assert cb.to_dict() == Codebook.load(write(tmp_path, "news.toml", TOML)).to_dict()


def test_name_defaults_to_file_stem(tmp_path):
    cb = Codebook.load(write(tmp_path, "my-topics.toml", TOML.replace('name = "news"\n', "")))
    assert cb.name == "my-topics"


# ------------------------------------------------------------------------------ lookups
def test_normalise():
    assert normalise("  Self-Esteem! ") == "self esteem"
    assert normalise("Charitable giving/helping") == "charitable giving helping"
    assert normalise("ÉCONOMIE") == "économie"
    assert normalise("**tech**") == "tech"
    assert normalise("...") == ""


def test_canonical_label():
    cb = make_codebook("single")
    assert cb.canonical_label("business") == "business"
    assert cb.canonical_label("  BUSINESS ") == "business"
    assert cb.canonical_label("Sports") == "sport"
    assert cb.canonical_label("sports.") == "sport"
    assert cb.canonical_label('"Technology"') == "tech"
    assert cb.canonical_label("tech-") == "tech"
    assert cb.canonical_label("entertainment") is None
    assert cb.canonical_label("") is None
    assert cb.canonical_label(3) is None


def test_canonical_label_with_punctuation_in_names():
    cb = build(labels_=labels("charitable giving/helping", "mastery (ability, capability)", "self-esteem"))
    assert cb.canonical_label("Charitable Giving / Helping") == "charitable giving/helping"
    assert cb.canonical_label("mastery ability capability") == "mastery (ability, capability)"
    assert cb.canonical_label("self esteem") == "self-esteem"


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_to_dict_from_dict_round_trip(kind):
    cb = make_codebook(kind)
    again = Codebook.from_dict(cb.to_dict())
    assert again == cb
    assert again.to_dict() == cb.to_dict()
    assert again.canonical_label("sports" if kind != "dimensions" else "Happiness") is not None


def test_round_trip_keeps_every_field():
    cb = Codebook.from_dict({"task": {"name": "n", "kind": "multi", "instructions": "Do it.", "text_field": "t",
                                      "label_field": "l", "id_field": "", "max_labels": 1},
                             "labels": [{"name": "x", "definition": "dx", "aliases": ["ex"]},
                                        {"name": "y", "definition": "dy"}]})
    assert cb.id_field is None
    again = Codebook.from_dict(cb.to_dict())
    assert again == cb and again.id_field is None and again.max_labels == 1
    assert again.labels[0].aliases == ("ex",)


def test_round_trip_through_toml_text(tmp_path):
    """to_dict() is what is saved with runs: it must survive being written as TOML and read back."""
    cb = Codebook.load(write(tmp_path, "news.toml", TOML))
    d = cb.to_dict()
    lines = ["[task]"]
    for k, v in d["task"].items():
        lines.append(f"{k} = {v!r}".replace("'", '"'))
    for lab in d["labels"]:
        lines.append("[[labels]]")
        for k, v in lab.items():
            lines.append(f"{k} = {v!r}".replace("'", '"'))
    again = Codebook.load(write(tmp_path, "again.toml", "\n".join(lines) + "\n"))
    assert again.to_dict() == d
