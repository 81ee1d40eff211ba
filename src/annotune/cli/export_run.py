"""`annotune export-run`: a fine-tuned run as merged weights or GGUF files (llama.cpp, Ollama)."""

from __future__ import annotations

from pathlib import Path

import typer

from annotune.cli.app import app, console, log, user_errors


@app.command("export-run")
@user_errors
def export_run(
    run: Path = typer.Argument(..., help="Fine-tuned run folder (type = \"finetuned\": a LoRA run)."),
    gguf: bool = typer.Option(False, "--gguf", help="Write GGUF files (F16 and --quant) and an Ollama Modelfile; "
                              "without it: merged full weights (a Hugging Face folder)."),
    quant: str = typer.Option("q4_k_m", "--quant", help="GGUF quantisation besides F16: q4_k_m, q5_k_m, q6_k, q8_0, "
                              "q4_0, or f16 for none."),
    output: Path = typer.Option(None, "--output", "-o", help="Folder to write (default: <run>/gguf, or "
                                "<run>/merged without --gguf)."),
):
    """Export a fine-tuned run for deployment. With --gguf: merge the adapter, convert with llama.cpp's converter,
    quantise, write an Ollama Modelfile and export.json; then compare the exported file with the run itself by
    adding a `type = "llamacpp"` system with `model = "<run>/gguf/model-q4_k_m.gguf"` to the comparison
    (needs annotune\\[gguf])."""
    from annotune.environment import quiet_libraries

    quiet_libraries()
    if not gguf:
        from annotune.finetune.trainer import merge_run  # refuses a folder that is not a run

        console.print(f"merged weights: {merge_run(run, output)}", markup=False, highlight=False)
        return
    from annotune.export.gguf import export_gguf

    info = export_gguf(run, quant=quant, output=output, log=log)
    folder = Path(info["folder"])
    for name, entry in info["files"].items():
        console.print(f"{name}: {folder / entry['file']} ({entry['bytes'] / 2**20:.1f} MiB)", markup=False,
                      highlight=False)
    console.print(f"Ollama: ollama create <name> -f {folder / info['modelfile']}", markup=False, highlight=False)
    console.print("re-check it on your test split: add to the comparison config\n"
                  f"[[systems]]\nname = \"exported {info['deploy']}\"\ntype = \"llamacpp\"\n"
                  f"model = \"{folder / info['deploy']}\"", markup=False, highlight=False)
