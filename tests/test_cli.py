"""The command line never shows a traceback for a user's mistake: `annotune compare` and `annotune check`
print one line naming the file, the row and the field, and exit with status 2."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotune.cli import app

from conftest import TOPIC_LABELS as LABELS, TOPIC_WORDS as WORDS

CODEBOOK = """\
[task]
name = "topics"
kind = "single"
instructions = "Code the text by its topic."

[[labels]]
name = "business"
definition = "companies and markets"

[[labels]]
name = "sport"
definition = "matches and athletes"
aliases = ["sports"]

[[labels]]
name = "tech"
definition = "computers and the internet"
"""

DIMENSIONS_CODEBOOK = """\
[task]
name = "dims"
kind = "dimensions"
scale = ["low", "medium", "high"]
label_field = "label"

[[labels]]
name = "happiness"
definition = "joy"

[[labels]]
name = "anxiety"
definition = "worry"
"""


def rows(n: int = 30) -> list[dict]:
    return [{"id": f"doc{i:03d}", "text": f"text {i} about {WORDS[LABELS[i % 3]]}", "label": LABELS[i % 3]}
            for i in range(n)]


def write_csv(path: Path, records: list[dict], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def write_config(tmp_path: Path, data: str = 'path = "data.csv"', extra: str = "", systems: str | None = None,
                 codebook: str = CODEBOOK, name: str = "config.toml") -> Path:
    (tmp_path / "codebook.toml").write_text(codebook, encoding="utf-8")
    systems = systems if systems is not None else '[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n'
    top = {"name": '"cli-test"', "seed": "3", "bootstrap": "50", "codebook": '"codebook.toml"'}
    given = {line.split("=")[0].strip() for line in extra.splitlines() if "=" in line}
    head = "".join(f"{k} = {v}\n" for k, v in top.items() if k not in given)
    text = f"{head}{extra}\n[data]\n{data}\n\n[split]\ntest_size = 9\n\n{systems}"
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a valid codebook, data file and config; tests break one thing each."""
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "data.csv", rows())
    write_config(tmp_path)
    return tmp_path


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result, *fragments: str) -> str:
    """Exit status 2, no traceback, exactly one line on stderr containing every fragment."""
    out = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.stdout, out, result.exception)
    assert "Traceback" not in out and "Traceback" not in result.stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


COMMANDS = ["check", "compare"]


# ------------------------------------------------------------------------------ config problems
@pytest.mark.parametrize("command", COMMANDS)
def test_missing_config_file(project, command):
    assert_user_error(run_cli(command, "nope.toml"), "nope.toml", "not found")


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_config_key(project, command):
    cfg = write_config(project, extra='colour = "red"')
    assert_user_error(run_cli(command, cfg), str(cfg), "field 'colour'", "unknown key 'colour'")


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_system_type(project, command):
    cfg = write_config(project, systems='[[systems]]\nname = "bert"\ntype = "bert"\n')
    assert_user_error(run_cli(command, cfg), str(cfg), "field 'systems[1].type'", "unknown system type 'bert'",
                      "prompt")


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_system_key(project, command):
    cfg = write_config(project, systems='[[systems]]\nname = "t"\ntype = "tfidf"\nshots = 3\n')
    assert_user_error(run_cli(command, cfg), "field 'systems[1].shots'", "unknown key 'shots' for a 'tfidf' system")


@pytest.mark.parametrize(("extra", "systems", "field"), [
    ('seed = "abc"', None, "field 'seed'"),
    ("bootstrap = -1", None, "field 'bootstrap'"),
    ("", '[[systems]]\nname = 3\ntype = "tfidf"\n', "field 'systems[1].name'"),
    ("", '[[systems]]\nname = "t"\ntype = "tfidf"\nC = "big"\n', "field 'systems[1].C'"),
    ("", '[[systems]]\nname = "p"\ntype = "prompt"\nshots = "two"\n', "field 'systems[1].shots'"),
    ("", '[[systems]]\nname = "p"\ntype = "prompt"\nbatch_size = 0\n', "field 'systems[1].batch_size'"),
    ("", '[[systems]]\nname = "p"\ntype = "prompt"\nanswer = "guess"\n', "field 'systems[1].answer'"),
    ('[model]\nname = "smollm2"\ntemperature = 0.5', None, "field 'model.temperature'"),
    ('[model]\ndtype = "int8"', None, "field 'model.dtype'"),
    ("[model]\nbatch_size = 2.5", None, "field 'model.batch_size'"),
    ("finetune = 3", None, "field 'finetune'"),
    ("split = 3", None, "field 'split'"),
    ('systems = ["tfidf"]', "", "field 'systems[1]'"),
])
def test_wrongly_typed_config_values(project, extra, systems, field):
    cfg = write_config(project, extra=extra, systems=systems)
    if extra.startswith("split"):  # the [split] table replaced by a value
        cfg.write_text(cfg.read_text().replace("[split]\ntest_size = 9\n", ""))
    assert_user_error(run_cli("compare", cfg), str(cfg), field)


@pytest.mark.parametrize("command", COMMANDS)
def test_unlabelled_data_cannot_be_compared(project, command):
    cfg = write_config(project, data='path = "data.csv"\nlabelled = false')
    assert_user_error(run_cli(command, cfg), "field 'data.labelled'", "must be labelled")


def test_interrupt_says_what_was_kept(project, monkeypatch):
    from annotune.experiments import compare

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare.Comparison, "run", interrupted)
    result = run_cli("compare", "config.toml")
    assert result.exit_code == 130 and "Traceback" not in result.stderr
    assert "finished parts are saved; run the same command again to resume" in result.stderr


def test_similar_system_names_would_share_a_file(project):
    cfg = write_config(project, systems='[[systems]]\nname = "tf idf"\ntype = "tfidf"\n'
                                        '[[systems]]\nname = "TF-IDF"\ntype = "tfidf"\nC = 1.0\n')
    assert_user_error(run_cli("check", cfg), "field 'systems[2].name'", "'tf idf' and 'TF-IDF'")


@pytest.mark.parametrize("command", COMMANDS)
def test_invalid_toml_config(project, command):
    cfg = project / "config.toml"
    cfg.write_text('name = "x"\n[[systems]\n', encoding="utf-8")
    assert_user_error(run_cli(command, cfg), "config.toml", "invalid TOML")


def test_model_path_that_does_not_exist_fails_before_any_system_runs(project):
    cfg = write_config(project, systems='[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n'
                                        '[[systems]]\nname = "mine"\ntype = "prompt"\nmodel = "./no-such-model"\n')
    result = run_cli("compare", cfg, "-q")
    assert_user_error(result, str(cfg), "field 'systems[2].model'", "no-such-model")
    assert not (project / "runs" / "cli-test" / "systems" / "tf-idf.json").exists()
    assert_user_error(run_cli("check", cfg), "field 'systems[2].model'")


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_predictions_file(project, command):
    cfg = write_config(project, systems='[[systems]]\nname = "gpt"\ntype = "predictions"\npath = "gpt.jsonl"\n')
    assert_user_error(run_cli(command, cfg), "field 'systems[1].path'", "gpt.jsonl")


@pytest.mark.parametrize("command", COMMANDS)
def test_predictions_file_without_the_label_column(project, command):
    (project / "gpt.jsonl").write_text('{"id": "doc000", "answer": "sport"}\n', encoding="utf-8")
    cfg = write_config(project, systems='[[systems]]\nname = "gpt"\ntype = "predictions"\npath = "gpt.jsonl"\n')
    assert_user_error(run_cli(command, cfg), "gpt.jsonl", "field 'label'", "column 'label' not found", "'answer'")


# ------------------------------------------------------------------------------ data problems
@pytest.mark.parametrize("command", COMMANDS)
def test_missing_data_file(project, command):
    cfg = write_config(project, data='path = "codings.csv"')
    assert_user_error(run_cli(command, cfg), "codings.csv", "data file not found")


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_column(project, command):
    cfg = write_config(project, data='path = "data.csv"\ntext_field = "body"')
    assert_user_error(run_cli(command, cfg), "data.csv", "field 'body'", "column 'body' not found",
                      "'id', 'text', 'label'")


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_label_names_row_and_value(project, command):
    records = rows()
    records[16]["label"] = "football"
    write_csv(project / "data.csv", records)
    line = assert_user_error(run_cli(command, "config.toml"), "data.csv", "row 17", "field 'label'",
                             "unknown label 'football'", "business, sport, tech")
    assert "aliases" in line


def test_unknown_label_message_suggests_an_alias_that_works_pasted_into_data(project):
    """The suggested `aliases = {...}` is TOML: pasted into [data] with a label filled in, the file loads."""
    import re

    records = rows()
    records[16]["label"] = "football"
    write_csv(project / "data.csv", records)
    line = assert_user_error(run_cli("check", "config.toml"), "unknown label 'football'")
    suggestion = re.search(r"aliases = \{.*?\}", line).group(0).replace("<label>", "sport")
    cfg = write_config(project, data=f'path = "data.csv"\n{suggestion}')
    result = run_cli("check", cfg)
    assert result.exit_code == 0, result.output


def test_label_alias_from_codebook_is_accepted(project):
    records = rows()
    records[16]["label"] = "Sports"
    write_csv(project / "data.csv", records)
    result = run_cli("check", "config.toml")
    assert result.exit_code == 0, result.stderr
    assert "30 documents" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_empty_text_with_empty_error(project, command):
    records = rows()
    records[4]["text"] = "   "
    write_csv(project / "data.csv", records)
    cfg = write_config(project, data='path = "data.csv"\nempty = "error"')
    assert_user_error(run_cli(command, cfg), "data.csv", "row 5", "field 'text'", "empty text")


def test_empty_text_is_dropped_and_counted_by_default(project):
    records = rows()
    records[4]["text"] = ""
    write_csv(project / "data.csv", records)
    result = run_cli("check", "config.toml")
    assert result.exit_code == 0, result.stderr
    assert "29 documents (1 empty dropped)" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_dimensions_codebook_on_plain_labels(project, command):
    cfg = write_config(project, codebook=DIMENSIONS_CODEBOOK)
    assert_user_error(run_cli(command, cfg), "data.csv", "row 1", "field 'label'", "kind 'dimensions' expects",
                      "'business'")


@pytest.mark.parametrize("command", COMMANDS)
def test_non_utf8_data_file(project, command):
    records = rows()
    records[6]["text"] = "caf\xe9 profit market"
    write_csv(project / "data.csv", records, encoding="latin-1")
    assert_user_error(run_cli(command, "config.toml"), "data.csv", "not UTF-8", "line 8", "0xe9")


@pytest.mark.parametrize("command", COMMANDS)
def test_excel_sheet_that_does_not_exist(project, command):
    import pandas as pd

    pd.DataFrame(rows()).to_excel(project / "data.xlsx", sheet_name="codings", index=False)
    cfg = write_config(project, data='path = "data.xlsx"\nsheet = "Coding"')
    assert_user_error(run_cli(command, cfg), "data.xlsx", "field 'sheet'", "sheet 'Coding' not found", "'codings'")


def test_excel_sheet_by_name(project):
    import pandas as pd

    with pd.ExcelWriter(project / "data.xlsx") as writer:
        pd.DataFrame([{"note": "x"}]).to_excel(writer, sheet_name="readme", index=False)
        pd.DataFrame(rows()).to_excel(writer, sheet_name="codings", index=False)
    cfg = write_config(project, data='path = "data.xlsx"\nsheet = "codings"')
    result = run_cli("check", cfg)
    assert result.exit_code == 0, result.stderr
    assert "30 documents" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_duplicate_ids(project, command):
    records = rows()
    records[9]["id"] = records[2]["id"]
    write_csv(project / "data.csv", records)
    assert_user_error(run_cli(command, "config.toml"), "data.csv", "row 10", "field 'id'", "duplicate id 'doc002'",
                      "row 3")


@pytest.mark.parametrize("command", COMMANDS)
def test_test_size_too_large(project, command):
    cfg = project / "config.toml"
    cfg.write_text(cfg.read_text().replace("test_size = 9", "test_size = 30"), encoding="utf-8")
    assert_user_error(run_cli(command, cfg), "config.toml", "field 'split.test_size'", "30 test documents out of 30")


# ------------------------------------------------------------------------------ check
def test_check_config(project):
    result = run_cli("check", "config.toml")
    assert result.exit_code == 0, result.stderr
    assert "codebook 'topics': single, 3 labels — ok" in result.stdout
    assert "data: 30 documents (0 empty dropped), train 21, test 9 — ok" in result.stdout
    assert "systems: tf-idf" in result.stdout


def test_check_codebook_alone(project):
    result = run_cli("check", "codebook.toml")
    assert result.exit_code == 0, result.stderr
    assert "codebook 'topics': single, 3 labels — ok" in result.stdout


def test_check_bad_codebook(project):
    (project / "codebook.toml").write_text(CODEBOOK.replace('aliases = ["sports"]', 'aliases = ["Business"]'))
    assert_user_error(run_cli("check", "codebook.toml"), "codebook.toml", "field 'labels[2].aliases'",
                      "duplicate alias 'Business'")
    assert_user_error(run_cli("compare", "config.toml"), "codebook.toml", "field 'labels[2].aliases'")


def test_check_config_with_inline_systems_is_not_taken_for_a_codebook(project):
    cfg = project / "config.toml"
    text = cfg.read_text().replace('[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n', "")
    cfg.write_text(text.replace("bootstrap = 50", 'bootstrap = 50\nsystems = [{name = "t", type = "tfidf"}]'))
    result = run_cli("check", cfg)
    assert result.exit_code == 0, result.stderr
    assert "systems: t" in result.stdout


def test_messages_with_brackets_are_printed_literally(project):
    """Label names, '[task]' and the like are user text, not console markup."""
    (project / "codebook.toml").write_text(CODEBOOK.replace('name = "tech"', 'name = "[/]tech"')
                                           .replace('name = "sport"', 'name = "[bold]sport"'))
    records = rows()
    records[0]["label"] = "[red]x"
    write_csv(project / "data.csv", records)
    line = assert_user_error(run_cli("check", "config.toml"), "row 1", "unknown label '[red]x'", "[/]tech",
                             "[bold]sport")
    assert line
    (project / "codebook.toml").write_text('task = "single"\n')
    assert_user_error(run_cli("check", "codebook.toml"), "field 'task'", "[task] must be a table")


def test_no_arguments_shows_help():
    result = run_cli()
    assert "compare" in result.stdout and "check" in result.stdout


# ------------------------------------------------------------------------------ real process
def _subprocess(args: list[str], cwd: Path, columns: int = 40) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm"}
    return subprocess.run([sys.executable, "-m", "annotune.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_subprocess_unknown_label_one_line_even_in_a_narrow_terminal(project):
    records = rows()
    records[16]["label"] = "football"
    write_csv(project / "data.csv", records)
    for command in COMMANDS:
        proc = _subprocess([command, "config.toml", "-q"] if command == "compare" else [command, "config.toml"],
                           project)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines == [lines[0]] and len(lines[0]) > 40
        assert lines[0].startswith("error: data.csv, row 17, field 'label': unknown label 'football'")


def test_subprocess_console_script_missing_column(project):
    exe = Path(sys.executable).with_name("annotune")
    cfg = write_config(project, data='path = "data.csv"\nlabel_field = "topic"')
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "annotune.cli"]
    proc = subprocess.run([*cmd, "compare", str(cfg)], cwd=project, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "60"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0
    assert "data.csv, field 'topic': column 'topic' not found" in proc.stderr


def test_subprocess_success(project):
    proc = _subprocess(["check", "config.toml"], project)
    assert proc.returncode == 0, proc.stderr
    assert "train 21, test 9 — ok" in proc.stdout


def test_help_shows_every_bracketed_config_name():
    """Rich markup would swallow `[finetune]` or `[[systems]]` in a help text: every bracketed name written
    in a command's or option's help must appear in its rendered `--help`."""
    import re

    import typer.main

    group = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for name, command in group.commands.items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        wanted = {m.replace("\\", "") for t in texts for m in re.findall(r"\\?\[\\?\[?[a-z_.]+\]\]?", t)}
        if not wanted:
            continue
        shown = " ".join(runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output.split())
        for token in wanted:
            checked += 1
            assert token in shown, f"annotune {name} --help lost {token!r}"
    assert checked >= 4


def test_command_list_wraps_each_summary_to_the_terminal_not_to_the_source_lines():
    """`annotune --help` lists every command with its docstring's first paragraph; a line break of the source
    must not cut a summary mid-sentence (at 200 columns a summary of up to 180 characters fits on one line)."""
    import inspect

    import typer.main

    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    lines = [line.strip(" │") for line in shown.splitlines()]
    checked = 0
    for name, command in typer.main.get_command(app).commands.items():
        summary = " ".join(inspect.getdoc(command.callback).split("\n\n")[0].split())
        if len(summary) > 180:  # wraps at 200 columns anyway
            continue
        row = next(line for line in lines if line.startswith(name + " "))
        assert " ".join(row.split()) == f"{name} {summary}", row
        checked += 1
    assert checked >= 12


@pytest.mark.parametrize("given, expected", [({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
                                             ({"GOMP_SPINCOUNT": "300000"}, None)])
def test_openmp_threads_sleep_when_idle_unless_the_user_chose(given, expected):
    """annotune makes idle OpenMP threads sleep (a busy neighbour process costs ~1.5x, not 3-5x), before torch
    loads, unless the user set a wait policy or spin count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | given
    code = "import annotune, os, sys; assert 'torch' not in sys.modules; print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(expected)
