"""The system registry: one contract every registered system type satisfies, typed configs that reject bad
values where they are declared, a new type added in one file (the README's keyword example), and the
package's import rules (no cycles, no private names across modules)."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from annotune.errors import ConfigError
from annotune.experiments.compare import run_context, split_data
from annotune.experiments.config import build_systems, json_schema, load_config
from annotune.systems import System, system_types, unregister_system

from conftest import REPO
from test_compare import SINGLE_CODEBOOK, config_text, invoke, load_results, single_records, write_csv

SRC = REPO / "src" / "annotune"


def system_tables(tmp_path: Path, tiny_model_dir: Path, base_url: str, tiny_gguf: Path) -> dict[str, str]:
    """A minimal [[systems]] table of every built-in type (fast settings)."""
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "label": r["label"]}) + "\n"
                             for r in single_records()[::2]), encoding="utf-8")
    return {
        "prompt": f'type = "prompt"\nmodel = "{tiny_model_dir}"\ndtype = "fp32"\nmax_new_tokens = 4\nshots = 1',
        "finetuned": (f'type = "finetuned"\nmodel = "{tiny_model_dir}"\ndtype = "fp32"\nanswer = "constrained"\n'
                      "train_size = 12\nfinetune = {epochs = 1.0, batch_size = 4, max_dev = 0, r = 4, "
                      'dtype = "fp32", max_length = 128}'),
        "tfidf": 'type = "tfidf"\nC = 2.0',
        "predictions": f'type = "predictions"\npath = "{preds.name}"',
        "reference": 'type = "reference"',
        "api": f'type = "api"\nbase_url = "{base_url}"\nmodel = "tiny"\nprice = 0\nmax_tokens = 4\nshots = 1',
        "embedding": 'type = "embedding"\nmodel = "minilm"\nC = 1.0\nmax_text_tokens = 32',
        "setfit": 'type = "setfit"\nmax_steps = 2\nbatch_size = 4\nmax_text_tokens = 32',
        "head": (f'type = "head"\nmodel = "{tiny_model_dir}"\ndtype = "fp32"\nepochs = 1\nbatch_size = 4\n'
                 "max_text_tokens = 32\nr = 4"),
        "llamacpp": f'type = "llamacpp"\nmodel = "{tiny_gguf}"\nmax_text_tokens = 32\nshots = 1',
    }


def project(tmp_path: Path, systems: str) -> Path:
    write_csv(tmp_path / "data.csv", single_records(60))
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("codebook.toml", systems, split="test_size = 12"), encoding="utf-8")
    return cfg


BUILT_IN = tuple(system_types())  # every registered type: a new built-in needs a table in `system_tables`


@pytest.fixture
def served_tiny_model(tiny_model_dir):
    """URL of the tiny model served by annotune's OpenAI-compatible server on 127.0.0.1 (for `api`)."""
    from annotune.backends.local import LocalBackend
    from annotune.serve import ServerThread, create_app

    with ServerThread(create_app(LocalBackend(str(tiny_model_dir), dtype="fp32"), model_name="tiny")) as srv:
        yield srv.url


def test_built_in_types_are_registered_with_their_config_classes():
    types = system_types()
    assert set(BUILT_IN) <= set(types)
    for name, cls in types.items():
        assert issubclass(cls, System) and cls.type == name
        assert cls.config_class.model_fields["type"].default == name


@pytest.mark.parametrize("stype", BUILT_IN)
def test_system_contract(stype, tmp_path, tiny_model_dir, served_tiny_model, tiny_gguf):
    """Every type: parsed from its table, preflight before work, one prediction per test document in
    order, labels from the codebook or None (INVALID), a fingerprint that follows its settings."""
    table = system_tables(tmp_path, tiny_model_dir, served_tiny_model, tiny_gguf)[stype]
    cfg = load_config(project(tmp_path, f'[[systems]]\nname = "s"\n{table}\n'), tmp_path / "out")
    (system,) = build_systems(cfg, run_context(cfg, progress=False, log=lambda m: None))
    assert system.type == stype and system.config.type == stype
    identity = system.preflight(1)
    fp = system.fingerprint(identity)
    assert json.dumps(fp, default=str)  # JSON-able
    train, test = split_data(cfg, cfg.load_data())
    preds, stats = system.run(train, test)
    assert [p.id for p in preds] == [d.id for d in test.docs]
    assert all(p.label is None or p.label in cfg.codebook.label_names for p in preds)
    assert stats.as_dict()["docs"] == len(test)
    if type(system).trains:  # a learning curve's line and the reports read what training cost
        assert stats.extra["train_seconds"] >= 0
    # the methods paragraph's wording comes from the type, from what results.json stores
    from annotune.experiments.compare import system_record

    record = system_record(system, "fp", preds, stats, {}, train)
    words = type(system).describe(json.loads(json.dumps(record, default=str)))
    assert isinstance(words, str) and words and ("“s”" in words or stype in ("tfidf", "predictions"))
    # settings are in the fingerprint: another value gives another fingerprint
    changed = system.config.model_copy(update={"name": "other"})
    assert type(system)(changed, system.context).fingerprint(identity) != fp
    # unknown keys are refused for this type, naming the field
    bad = project(tmp_path, f'[[systems]]\nname = "s"\n{table}\ncolour = "red"\n')
    with pytest.raises(ConfigError, match=f"unknown key 'colour' for a '{stype}' system") as err:
        load_config(bad)
    assert err.value.field == "systems[1].colour"


@pytest.mark.parametrize(("table", "field", "message"), [
    ('type = "finetuned"\nfinetune = {learning_rate = -1.0}', "systems[1].finetune.learning_rate", "> 0"),
    ('type = "finetuned"\nfinetune = {epochs = 0}', "systems[1].finetune.epochs", "> 0"),
    ('type = "finetuned"\nfinetune = {r = 0}', "systems[1].finetune.r", ">= 1"),
    ('type = "finetuned"\ntrain_size = 0', "systems[1].train_size", ">= 1"),
    ('type = "finetuned"\nfinetune = {objective = "questions"}', "systems[1]", 'set answer = "constrained"'),
    ('type = "prompt"\nshots = -1', "systems[1].shots", ">= 0"),
    ('type = "prompt"\ndtype = "int4"', "systems[1].dtype", "'auto'"),
    ('type = "tfidf"\nC = 0', "systems[1].C", "> 0"),
    ('type = "api"\nbase_url = "ftp://x"\nmodel = "m"', "systems[1].base_url", "^https?://"),
    ('type = "api"\nbase_url = "http://x"\nmodel = "m"\napi_key_env = "sk-123"', "systems[1].api_key_env",
     "NAME of the environment variable"),
    ('type = "api"\nbase_url = "http://x"\nmodel = "m"\ntop_logprobs = 50', "systems[1].top_logprobs", "<= 20"),
])
def test_out_of_range_values_are_rejected_with_file_and_field(tmp_path, table, field, message):
    cfg = project(tmp_path, f'[[systems]]\nname = "s"\n{table}\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.field == field and message in err.value.message and err.value.file == str(cfg)
    assert "sk-123" not in str(err.value)  # an api key pasted by mistake is never echoed


@pytest.mark.parametrize(("extra", "field"), [
    ("[finetune]\nlearning_rate = -0.1", "finetune.learning_rate"),
    ("[finetune]\nepochs = 0", "finetune.epochs"),
    ("[model]\nbatch_size = 0", "model.batch_size"),
    ("[curve]\nsizes = [0]", "curve.sizes"),
])
def test_check_rejects_out_of_range_hyper_parameters(tmp_path, extra, field):
    cfg = project(tmp_path, '[[systems]]\nname = "t"\ntype = "tfidf"\n\n' + extra + "\n")
    result = invoke_error("check", cfg)
    assert f"field '{field}'" in result


def invoke_error(*args) -> str:
    from typer.testing import CliRunner

    from annotune.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    return result.stderr


def test_model_settings_are_inherited_and_paths_are_relative_to_the_config(tmp_path, tiny_model_dir):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_model_dir)
    sub = tmp_path / "cfgs"
    sub.mkdir()
    preds = sub / "p.jsonl"
    preds.write_text('{"id": "doc000", "label": "sport"}\n', encoding="utf-8")
    text = config_text("../codebook.toml", '[[systems]]\nname = "a"\n\n[[systems]]\nname = "b"\nbatch_size = 2\n\n'
                       '[[systems]]\nname = "p"\ntype = "predictions"\npath = "p.jsonl"\n',
                       data='path = "../data.csv"', model='[model]\nname = "../models/tiny"\nbatch_size = 3')
    write_csv(tmp_path / "data.csv", single_records(30))
    (tmp_path / "codebook.toml").write_text(SINGLE_CODEBOOK, encoding="utf-8")
    (sub / "c.toml").write_text(text, encoding="utf-8")
    cfg = load_config(sub / "c.toml")
    a, b, p = cfg.systems
    assert Path(a.model) == sub / "../models/tiny" and a.batch_size == 3 and b.batch_size == 2
    assert Path(p.path) == preds
    assert len(cfg.load_data()) == 30


@pytest.mark.parametrize(("finetune", "trained_cut"), [("", 40), ("[finetune]\nmax_text_tokens = 32\n", 32)])
def test_model_max_text_tokens_also_cuts_what_finetuned_and_head_systems_train_on(tmp_path, finetune, trained_cut):
    """[model] max_text_tokens is the document cut of every local system — prompts, fine-tuning and heads —
    unless [finetune] (or the system) says otherwise; a curve point inherits it like a [[systems]] table."""
    from annotune.experiments.curve import Curve
    from annotune.experiments.compare import run_context

    systems = ('[[systems]]\nname = "p"\n\n[[systems]]\nname = "f"\ntype = "finetuned"\n\n'
               '[[systems]]\nname = "f own"\ntype = "finetuned"\nfinetune = {max_text_tokens = 24}\n\n'
               '[[systems]]\nname = "h"\ntype = "head"\n\n'
               '[[systems]]\nname = "h own"\ntype = "head"\nmax_text_tokens = 16\n\n'
               '[model]\nmax_text_tokens = 40\n\n[curve]\nsizes = [6]\n\n' + finetune)
    cfg = load_config(project(tmp_path, systems))
    by_name = {s.name: s for s in cfg.systems}
    assert by_name["p"].max_text_tokens == 40
    assert by_name["f"].finetune.max_text_tokens == trained_cut and by_name["f"].max_text_tokens == trained_cut
    assert by_name["f own"].finetune.max_text_tokens == 24 and by_name["f own"].max_text_tokens == 24
    assert by_name["h"].max_text_tokens == 40 and by_name["h own"].max_text_tokens == 16
    point = Curve(cfg, progress=False).point_system(6, 1, "generate", run_context(cfg, seed=1))
    assert point.config.finetune.max_text_tokens == trained_cut
    unset = load_config(project(tmp_path, '[[systems]]\nname = "f"\ntype = "finetuned"\n'))
    assert unset.systems[0].finetune.max_text_tokens == 256  # nothing written: the fine-tuning default


def test_output_written_in_the_config_is_relative_to_it(tmp_path):
    cfg_path = project(tmp_path, '[[systems]]\nname = "t"\ntype = "tfidf"\n')
    cfg_path.write_text('output = "results/here"\n' + cfg_path.read_text(), encoding="utf-8")
    assert load_config(cfg_path).output == tmp_path / "results" / "here"


def test_json_schema_covers_sections_and_every_system_type():
    schema = json_schema()
    assert {"data", "split", "model", "finetune", "curve", "systems"} <= set(schema["properties"])
    titles = {v["title"] for v in schema["properties"]["systems"]["items"]["anyOf"]}
    assert {f"{t} system" for t in BUILT_IN} <= titles
    json.dumps(schema)


def test_a_new_system_type_is_one_file(tmp_path):
    """The README's keyword-rule system: imported, it is a type like any other in `compare`."""
    spec = importlib.util.spec_from_file_location("keyword_system", REPO / "examples" / "plugin" / "keyword_system.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        cfg = project(tmp_path, '[[systems]]\nname = "rules"\ntype = "keywords"\n'
                                'keywords = {sport = ["match"], tech = ["software"], business = ["shares"]}\n'
                                '\n[[systems]]\nname = "none"\ntype = "keywords"\nkeywords = {sport = ["zzz"]}\n')
        invoke("compare", cfg, "-o", tmp_path / "out", "-q")
        results = {s["name"]: s["metrics"] for s in load_results(tmp_path / "out")["systems"]}
        assert results["rules"]["accuracy"] == 1.0
        assert results["none"]["valid_rate"] == 0.0 and results["none"]["accuracy"] == 0.0
        with pytest.raises(ConfigError, match="unknown key 'keyword'"):
            load_config(project(tmp_path, '[[systems]]\nname = "r"\ntype = "keywords"\nkeyword = {}\n'))
    finally:
        unregister_system("keywords")
    with pytest.raises(ConfigError, match="unknown system type 'keywords'"):
        load_config(cfg)


def test_a_system_type_from_an_entry_point(monkeypatch, tmp_path):
    """A package declaring an `annotune.systems` entry point adds its type without being imported by hand."""
    import annotune.plugins
    from annotune.systems.base import ENTRY_POINT_GROUP

    from conftest import install_fake_distribution

    monkeypatch.syspath_prepend(str(REPO / "examples" / "plugin"))
    install_fake_distribution(monkeypatch, tmp_path / "site", {ENTRY_POINT_GROUP: {
        "keywords": "keyword_system:KeywordSystem"}})
    monkeypatch.setattr(annotune.plugins, "_LOADED", set())
    try:
        assert "keywords" in system_types()
        cfg = load_config(project(tmp_path, '[[systems]]\nname = "r"\ntype = "keywords"\nkeywords = {sport = ["match"]}\n'))
        assert cfg.systems[0].type == "keywords"
    finally:
        unregister_system("keywords")
        sys.modules.pop("keyword_system", None)


# ---------------------------------------------------------------------------- import rules
def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from annotune... import` / `import annotune...` at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("annotune"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("annotune")]
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("annotune"):
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names if a.name.startswith("annotune")}
    return mods


def test_no_private_names_are_imported_across_modules():
    offences = []
    for path in SRC.rglob("*.py"):
        for module, names in _imports(path):
            offences += [f"{path.relative_to(SRC)}: {module}.{n}" for n in names if n.startswith("_")]
    assert not offences, offences


def test_no_import_cycles_between_modules():
    """Module-level imports form no cycle (imports inside functions are deliberate lazy loads)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: {i for i in _top_level_imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_modules_stay_small_or_say_why():
    vendored = SRC / "export" / "converter"  # llama.cpp's converter, kept as it is upstream
    long = [f"{p.relative_to(SRC)} ({n} lines)" for p in SRC.rglob("*.py") if vendored not in p.parents
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420
            and "longer than" not in p.read_text(encoding="utf-8")[:2000]]
    assert not long, long


def test_importing_annotune_loads_no_heavy_library():
    import subprocess

    code = "import annotune, sys; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_readme_option_tables_come_from_the_config_classes():
    """README's reference is `annotune options` verbatim (regenerate: python -m annotune.experiments.reference)."""
    from annotune.experiments.reference import README_END, README_START, options_markdown

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0]
    assert block.strip() == options_markdown().strip()
