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

from annotune.errors import AnnotuneError

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
    from annotune.experiments.results import table_rows

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
    from annotune.workflows import compare as run_compare, load_config

    cfg = load_config(config, output)
    results = run_compare(cfg, progress=not quiet, fresh=fresh, log=log)
    print_results_table(results)
    console.print(f"results: {cfg.output / 'results.json'}  predictions: {cfg.output / 'predictions.csv'}",
                  markup=False, highlight=False)
    from annotune.report import write_report

    console.print(f"report: {write_report(cfg.output)['html']}", markup=False, highlight=False)


def print_curve_table(curve: dict) -> None:
    """One table per answer mode (mean over seeds with its interval, per size), then where the fine-tuned
    model matches each reference."""
    from annotune.report.format import PRIMARY_NAMES, ci_text as _ci, size_label as _size_label

    primary = PRIMARY_NAMES.get(curve["primary"], curve["primary"])
    for answer, block in curve["answers"].items():
        table = Table(title=escape(f"{curve['name']} — learning curve, fine-tuned, {answer} answers, "
                                   f"{curve['data']['test']} test documents"))
        for i, h in enumerate(["Train docs", "Seeds", f"Mean {primary} [95% CI]", "SD", "Per seed", "Valid %",
                               "Train s"]):
            table.add_column(escape(h), justify="left" if i == 0 else "right")
        for r in block["rows"]:
            table.add_row(escape(_size_label(r["size"], r["n_train"])), str(len(r["seeds"])),
                          _ci(r["mean"], r.get("ci")), "–" if r.get("sd") is None else f"{r['sd']:.3f}",
                          ", ".join(f"{v:.3f}" for v in r["values"]), f"{100 * r['valid_rate']:.1f}",
                          "–" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}")
        console.print(table)
        for m in block["matches"]:
            bm, bc = m.get("by_mean"), m.get("by_ci")
            line = f"  vs {m['reference']} ({m['reference_value']:.3f}): "
            line += (f"mean ≥ reference from {_size_label(bm['size'], bm['n_train'])} documents "
                     f"({_ci(bm['mean'], bm.get('ci'))})" if bm else "mean never ≥ reference")
            line += (f"; 95% CI lower bound ≥ reference from {_size_label(bc['size'], bc['n_train'])}" if bc
                     else "; 95% CI lower bound never ≥ reference")
            console.print(line, markup=False, highlight=False)


@app.command()
@user_errors
def curve(
    config: Path = typer.Argument(..., help="Comparison config with a `curve` table (sizes, seeds, answer, "
                                  "references)."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (default: the config's `output`, "
                                "else runs/<name>)."),
    fresh: bool = typer.Option(False, "--fresh", help="Re-evaluate every point and reference instead of reusing "
                               "finished ones (trained adapters are reused)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Learning curve: fine-tune on subsamples of each size × seed and compare with the references.

    For every size and seed, a seeded stratified subsample of the training split is fine-tuned with the
    config's `finetune` table and scored on the one test split. Each finished point is saved at once under <output>/curve/points/; a rerun skips finished points.
    Writes curve/curve.json and the report (report.html, report.md).
    """
    _quiet_libraries()
    from annotune.workflows import curve as run_curve, load_config
    from annotune.report import write_report

    cfg = load_config(config, output)
    result = run_curve(cfg, progress=not quiet, fresh=fresh, log=log)
    print_curve_table(result)
    console.print(f"curve: {cfg.output / 'curve' / 'curve.json'}  report: {write_report(cfg.output)['html']}",
                  markup=False, highlight=False)


@app.command()
@user_errors
def report(
    folder: Path = typer.Argument(..., help="Output folder of `annotune compare` or `annotune curve`."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the report to this folder instead."),
):
    """Write report.html (self-contained, can be mailed) and report.md for an output folder.

    Comparison table, confusion matrices, per-class F1, learning curve, cost and throughput, reproducibility
    manifest and a methods paragraph; figures are embedded in the HTML and written to figures/ for the
    Markdown."""
    from annotune.report import write_report

    paths = write_report(folder, output)
    console.print(f"report: {paths['html']}  markdown: {paths['markdown']}  figures: {paths['figures']}",
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
    from annotune.workflows import finetune as run_finetune, load_config
    from annotune.finetune.trainer import merge_run

    cfg = load_config(config)
    run, trained = run_finetune(cfg, system=system, run=output, resume=resume, progress=not quiet, log=log)
    console.print(f"{'trained' if trained else 'already trained'}: {run}", markup=False, highlight=False)
    if merge:
        console.print(f"merged weights: {merge_run(run)}", markup=False, highlight=False)


@app.command()
@user_errors
def check(
    config: Path = typer.Argument(..., help="Comparison config or codebook (TOML/YAML)."),
):
    """Validate a codebook (and the data a config names) without running any model."""
    import tomllib

    from annotune.workflows import load_config
    from annotune.codebook import Codebook
    from annotune.experiments.compare import check as check_config
    from annotune.errors import ConfigError

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
        cfg = load_config(config)
        checked = check_config(cfg)
        cb, dataset = cfg.codebook, checked["dataset"]
        say(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")
        say(f"data: {len(dataset)} documents ({dataset.dropped_empty} empty dropped), "
            f"train {len(checked['train'])}, test {len(checked['test'])} — ok")
        say(f"systems: {', '.join(s.name for s in cfg.systems) or 'none'} — ok")
        if cfg.curve:
            say(f"curve: sizes {cfg.curve.sizes}, seeds {cfg.curve.seeds} — ok")
    else:
        cb = Codebook.load(config)
        say(f"codebook {cb.name!r}: {cb.kind}, {len(cb.labels)} labels — ok")


@app.command()
@user_errors
def plan(
    config: Path = typer.Argument(..., help="Comparison config (TOML) with one or more `api` systems."),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder (where the response cache is)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
):
    """Estimate the tokens and cost of CONFIG's API systems before anything is sent.

    Counts the exact requests a run would send (prompt tokens exactly when a system names a `tokenizer`,
    else ~4 characters a token), prices them from the price table, shows the batch-API price where the
    provider has a discount, and how many requests the response cache already holds.
    """
    import json

    _quiet_libraries()
    from annotune.workflows import load_config
    from annotune.experiments.plan import plan_config

    cfg = load_config(config, output)
    plans = [p.as_dict() for p in plan_config(cfg)]
    if as_json:
        console.print_json(json.dumps({"config": str(config), "systems": plans}))
        return
    if not plans:
        console.print("no api systems in this config: nothing would be sent.")
        return

    def usd(x) -> str:
        return "–" if x is None else f"${x:.4f}" if x < 1 else f"${x:,.2f}"

    table = Table(title=escape(f"{cfg.name} — plan for API systems (nothing sent)"))
    for i, h in enumerate(["System", "Model", "Requests", "Cached", "Input tokens", "Output tokens (est.)", "Cost",
                           "Batch API", "To pay now", "$/1k docs", "Price date"]):
        table.add_column(h, justify="left" if i < 2 else "right")
    for p in plans:
        table.add_row(escape(p["name"]), escape(p["model"]), str(p["requests"]), str(p["cached_requests"]),
                      f"{p['input_tokens']:,}" + ("" if p["token_counts"] == "exact" else " ~"),
                      f"{p['output_tokens']:,} ~", usd(p["cost_usd"]), usd(p["cost_usd_batch"]),
                      usd(p["cost_usd_remaining"]),
                      "–" if p["cost_per_1k_docs"] is None else f"{p['cost_per_1k_docs']:.4f}",
                      escape(str((p["price"] or {}).get("date") or "–")))
    console.print(table)
    total = [p["cost_usd"] for p in plans]
    if all(t is not None for t in total):
        console.print(f"total: {usd(sum(total))}; ~ marks estimates", markup=False, highlight=False)
    for p in plans:
        for note in p["notes"]:
            console.print(f"{p['name']}: {note}", markup=False, highlight=False)


@app.command()
@user_errors
def serve(
    model: str = typer.Argument(..., help="Model to serve: smollm2, a HF folder or hub id, a .gguf file, or a "
                                "fine-tuned run folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8000, "--port", "-p", help="Port (0: any free port)."),
    name: str = typer.Option(None, "--name", help="Model id clients send (default: the folder or file name)."),
    token_env: str = typer.Option(None, "--token-env", help="Environment variable holding a bearer token that "
                                  "clients must send (Authorization: Bearer ...)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, bf16, fp16 or fp32."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each request line."),
):
    """Serve a local or fine-tuned model through an OpenAI-compatible API (/v1/chat/completions,
    /v1/models), with logprobs and label-enum constraints, so any OpenAI client can use it."""
    import ipaddress
    from pathlib import Path

    _quiet_libraries()
    from annotune.backends.local import LocalBackend
    from annotune.errors import ConfigError
    from annotune.serve import bind_socket, create_app, run_server
    from annotune.serve.server import url_of

    token = None
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ConfigError(f"the environment variable {token_env} (--token-env) is not set")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        log(f"warning: serving on {host} without a bearer token: anyone who can reach this address can use "
            "the model (use --token-env)")
    sock = bind_socket(host, port)
    try:
        engine = LocalBackend(model, dtype=dtype)
        name = name or Path(str(model)).name or engine.name or "annotune"
        app = create_app(engine, model_name=name, token=token)
        console.print(f"serving {name!r} on {url_of(sock)}", markup=False, highlight=False)
        sys.stdout.flush()
        run_server(app, sock, verbose=verbose)
    except KeyboardInterrupt:
        log("stopped.")
    finally:
        sock.close()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
