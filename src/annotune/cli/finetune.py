"""`annotune finetune`: train a config's fine-tuned system into a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, quiet_option, console, log, user_errors
from annotune.environment import quiet_libraries


@app.command()
@user_errors
def finetune(
    config: Path = typer.Argument(..., help="Comparison config with a 'finetuned' system (hyper-parameters: its "
                                  "\\[finetune] table)."),
    system: str = typer.Option(None, "--system", "-s", help="Which 'finetuned' system to train (default: the first)."),
    output: Path = typer.Option(None, "--output", "-o", help="Run folder (default: the one `compare` would use)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its newest checkpoint."),
    merge: bool = typer.Option(False, "--merge", help="Also write merged full weights to <run>/merged."),
    quiet: bool = quiet_option(),
):
    """LoRA fine-tune the config's model on its training split and write a run folder (adapter, tokenizer,
    codebook, manifest). Use the folder as `model = "<run folder>"` anywhere a model is expected."""
    quiet_libraries()
    from annotune.workflows import finetune as run_finetune, load_config
    from annotune.finetune.distributed import is_main_process
    from annotune.finetune.trainer import merge_run

    cfg = load_config(config)
    run, trained = run_finetune(cfg, system=system, run=output, resume=resume, progress=not quiet, log=log)
    if not is_main_process():  # under a launcher, rank 0 reports and merges
        return
    console.print(f"{'trained' if trained else 'already trained'}: {run}", markup=False, highlight=False)
    if merge:
        console.print(f"merged weights: {merge_run(run)}", markup=False, highlight=False)
