"""The `annotune` command line: a thin layer over the Python API.

Errors in the user's input are printed as one line (file, row, field) with exit status 2, never as a
traceback; Ctrl-C says what was kept.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import AnnotuneError

app = typer.Typer(
    name="annotune",
    help="Code text corpora with small open LLMs and measure, honestly, whether they can replace a big "
    "closed model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 200)
# soft_wrap: an error stays one line (grep-able, copy-pasteable) whatever the terminal width
err_console = Console(stderr=True, soft_wrap=True)


def log(msg: str) -> None:
    """Progress messages on stderr, printed literally (system names may contain brackets)."""
    err_console.print(msg, highlight=False, markup=False)


def user_errors(fn):
    """Turn user errors into one clear line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnnotuneError as exc:
            # the message is user data (file names, labels, "[task]"...): never parse it as markup
            err_console.print(f"[bold red]error:[/] {escape(exc.format())}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: finished parts are saved; run the same command again to resume.")
            raise typer.Exit(130) from None

    return wrapper


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def print_results_table(results: dict) -> None:
    from .compare import table_rows

    header, rows = table_rows(results)
    kind = results["task"]["task"]["kind"]
    table = Table(title=escape(f"{results['name']} — {kind} task, {results['data']['test']} test documents"))
    for i, h in enumerate(header):
        table.add_column(escape(h), justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    console.print(table)


@app.command()
@user_errors
def compare(
    config: Path = typer.Argument(..., help="Comparison config (TOML): codebook, data, split, systems."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (default: the config's `output`, "
                                "else runs/<name>)."),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute every system instead of reusing finished ones."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Run every system of CONFIG on the same test split and print one comparison table.

    Writes results.json, predictions.csv and one file per finished system to the output folder; an
    interrupted run resumes where it stopped.
    """
    _quiet_libraries()
    from .compare import CompareConfig, Comparison

    cfg = CompareConfig.load(config, output)
    results = Comparison(cfg, progress=not quiet, fresh=fresh, log=log).run()
    print_results_table(results)
    console.print(f"results: {cfg.output / 'results.json'}  predictions: {cfg.output / 'predictions.csv'}",
                  markup=False, highlight=False)


@app.command()
@user_errors
def finetune(
    config: Path = typer.Argument(..., help="Comparison config with a [finetune] table or a 'finetuned' system."),
    system: str = typer.Option(None, "--system", "-s", help="Which 'finetuned' system to train (default: the first)."),
    output: Path = typer.Option(None, "--output", "-o", help="Run folder (default: the one `compare` would use)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its newest checkpoint."),
    merge: bool = typer.Option(False, "--merge", help="Also write merged full weights to <run>/merged."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """LoRA fine-tune the config's model on its training split and write a run folder (adapter, tokenizer,
    codebook, manifest). Use the folder as `model = "<run folder>"` anywhere a model is expected."""
    _quiet_libraries()
    from .compare import CompareConfig, Comparison, split_data
    from .finetune import FineTuner, is_run_folder, merge_run

    cfg = CompareConfig.load(config)
    specs = [s for s in cfg.systems if s.get("type") == "finetuned"]
    if system:
        specs = [s for s in specs if s["name"] == system]
        if not specs:
            raise AnnotuneError(f"no 'finetuned' system named {system!r}", file=config, field="systems")
    spec = specs[0] if specs else {"name": "finetune", "type": "finetuned"}
    dataset = cfg.load_data()
    train, _ = split_data(cfg, dataset)
    comparison = Comparison(cfg, progress=not quiet, log=log)
    data, ft_cfg, base, run = comparison.finetune_spec(spec, train)
    run = output or run
    if is_run_folder(run) and not resume:
        console.print(f"already trained: {run}")
    else:
        FineTuner(cfg.codebook, ft_cfg, base).train(data.docs, run, resume=resume, progress=not quiet,
                                                     data_file=str(cfg.data), log=console.print)
    if merge:
        console.print(f"merged weights: {merge_run(run)}")


@app.command()
@user_errors
def check(
    config: Path = typer.Argument(..., help="Comparison config or codebook (TOML/YAML)."),
):
    """Validate a codebook (and the data a config names) without running any model."""
    import tomllib

    from .codebook import Codebook
    from .compare import CompareConfig, Comparison, split_data
    from .errors import ConfigError

    def say(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    if not config.is_file():
        raise ConfigError("file not found" if not config.exists() else "expected a file, got a folder", file=config)
    is_config = False
    if config.suffix.lower() not in (".yaml", ".yml"):
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8"))
            is_config = any(key in raw for key in ("systems", "data", "split"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            pass  # Codebook.load says what is wrong, in one line
    if is_config:
        cfg = CompareConfig.load(config)
        dataset = cfg.load_data()
        train, test = split_data(cfg, dataset)
        Comparison(cfg, progress=False).preflight()  # prediction files and model paths
        cb = cfg.codebook
        say(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")
        say(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped), "
            f"train {len(train)}, test {len(test)} — ok")
        say(f"systems: {', '.join(s['name'] for s in cfg.systems)} — ok")
    else:
        cb = Codebook.load(config)
        say(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
