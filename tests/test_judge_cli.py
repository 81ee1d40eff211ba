"""`annotune judge` end to end with the tiny random model as the judge: locally, and through the real
`annotune serve` app on 127.0.0.1. A random model writes no verdicts, so every judgement must be counted
as unparsed and none scored; the JSON output keeps every repeat's raw output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotune.cli import app

ROWS = [
    {"question": "What lowers blood pressure?", "answer": "Diet, exercise and medication.",
     "sys_a": "Less salt and more exercise.", "sys_b": "Nothing does.", "human_a": 8},
    {"question": "What is asthma?", "answer": "A chronic disease of the airways.",
     "sys_a": "A disease of the airways.", "sys_b": "A skin rash.", "human_a": 9},
    {"question": "Is flu caused by a virus?", "answer": "Yes, by influenza viruses.",
     "sys_a": "Yes.", "sys_b": "", "human_a": None},
]


@pytest.fixture()
def data(tmp_path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def local(tiny_model_dir) -> list[str]:
    return ["--judge-model", str(tiny_model_dir), "--dtype", "fp32", "--max-tokens", "8", "--quiet"]


def test_local_judge_counts_unparsed_and_writes_raw_outputs(tiny_model_dir, data, tmp_path):
    out = tmp_path / "res" / "results.json"
    res = run_cli("judge", data, "--answers", "sys_a", "--answers", "answer", "--answers", "sys_b", "--repeats", 2,
                  "--human-field", "sys_a=human_a", "--output", out, *local(tiny_model_dir))
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    text = res.stdout
    for fragment in ("judge:", "overall [95% CI]", "judge SD", "unparsed", "length ρ", "human α", "sys_a",
                     "answer (no ref)", "sys_b", "6/6", "4/4", "unparsed verdicts (never scored)"):
        assert fragment in text, (fragment, text)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["answers"] == ["sys_a", "answer", "sys_b"] and result["rows"] == 3
    cols = result["columns"]
    assert cols["sys_a"]["unparsed"] == cols["sys_a"]["judgements"] == 6  # random tokens: nothing scored
    assert cols["sys_a"]["overall"]["mean"] is None and cols["sys_a"]["overall"]["items_scored"] == 0
    assert cols["sys_b"]["items"] == 2 and cols["sys_b"]["missing"] == 1  # an empty answer is not judged
    assert cols["answer"]["show_reference"] is False and cols["sys_a"]["show_reference"] is True
    assert cols["sys_a"]["human"]["graded"] == 2 and cols["sys_a"]["human"]["spearman"] is None
    assert cols["sys_a"]["mean_length_chars"] == pytest.approx(sum(len(r["sys_a"]) for r in ROWS) / 3)
    assert sum(cols["sys_a"]["unparsed_reasons"].values()) == 6
    item = result["items"][0]
    assert item["human"] == {"sys_a": 8.0}
    reps = item["judgements"]["sys_a"]["repeats"]
    assert len(reps) == 2 and all(r["error"] and r["raw"] and r["scores"] == {} for r in reps)
    assert reps[1]["reused"] and reps[0]["raw"] == reps[1]["raw"]  # greedy: the same chat judged once
    assert item["judgements"]["sys_a"]["show_reference"] and not item["judgements"]["answer"]["show_reference"]
    assert "sys_b" not in result["items"][2]["judgements"]
    assert result["judge"]["backend"] == "local" and result["judge"]["repeats"] == 2


def test_missing_answer_column_is_a_user_error(data):
    res = run_cli("judge", data, "--answers", "sys_c", "--judge-model", "nope-not-loaded")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert str(data) in line and "field 'sys_c'" in line and "not found" in line


def test_pairwise_needs_two_answer_columns(data):
    res = run_cli("judge", data, "--answers", "sys_a", "--pairwise", "--judge-model", "nope-not-loaded")
    assert res.exit_code == 2 and "--pairwise judges exactly two answer columns" in res.stderr, res.stderr
    res = run_cli("judge", data, "--answers", "sys_a", "--answers", "sys_b", "--human-field", "human_a")
    assert res.exit_code == 2 and "ANSWER=COLUMN" in res.stderr, res.stderr
    res = run_cli("judge", data, "--answers", "sys_a", "--model", "x")
    assert res.exit_code == 2 and "--base-url" in res.stderr, res.stderr


def test_pairwise_reports_position_bias(tiny_model_dir, data, tmp_path):
    out = tmp_path / "pair.json"
    res = run_cli("judge", data, "--answers", "sys_a", "--answers", "sys_b", "--pairwise", "--repeats", 2,
                  "--output", out, *local(tiny_model_dir))
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert "position bias: 0/0 pairs" in res.stdout and "pairwise" in res.stdout
    result = json.loads(out.read_text(encoding="utf-8"))
    pos = result["position_bias"]["overall"]
    assert pos["pairs"] == 2 and pos["decided"] == 0 and pos["unparsed"] == 4
    reps = result["items"][0]["judgements"]["sys_a vs sys_b"]["repeats"]
    assert sorted(tuple(r["order"]) for r in reps) == [("sys_a", "sys_b"), ("sys_b", "sys_a")]  # both orders


def test_api_judge_through_annotune_serve(tiny_model_dir, data, tmp_path, monkeypatch):
    from annotune.backends.local import LocalBackend
    from annotune.serve import create_app, start_server

    token = "judge-cli-token-456"
    srv = start_server(create_app(LocalBackend(str(tiny_model_dir), dtype="fp32"), model_name="tiny", token=token))
    try:
        monkeypatch.setenv("ANNOTUNE_TEST_JUDGE_CLI_KEY", token)
        out = tmp_path / "api.json"
        res = run_cli("judge", data, "--answers", "sys_a", "--base-url", srv.url, "--model", "tiny", "--api-key-env",
                      "ANNOTUNE_TEST_JUDGE_CLI_KEY", "--repeats", 2, "--max-tokens", 8, "--limit", 2, "--quiet",
                      "--output", out)
        usage = srv.app.state.serve.usage.requests
    finally:
        srv.stop()
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert usage == 4  # an API judge sends each repeat (seed + r)
    text = out.read_text(encoding="utf-8")
    assert token not in text and token not in res.stdout and token not in res.stderr
    result = json.loads(text)
    assert result["judge"]["api_key_env"] == "ANNOTUNE_TEST_JUDGE_CLI_KEY" and result["rows"] == 2
    col = result["columns"]["sys_a"]
    assert col["judgements"] == 4 and col["unparsed"] == 4
    reps = result["items"][1]["judgements"]["sys_a"]["repeats"]
    assert all(r["logprobs"] and 0 < r["n_tokens"] <= 8 and r["error"] for r in reps)
