"""`annotune judge`: open answers graded by an LLM judge whose reliability is measured (issue 12); the
work is `annotune.judging.run.judge_file`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from annotune.cli.app import app, console, log, quiet_option, user_errors
from annotune.environment import quiet_libraries


def _num(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_ci(st: dict) -> str:
    if st.get("mean") is None:
        return "–"
    ci = st.get("ci")
    return f"{st['mean']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def render(result: dict) -> None:
    """One table: a row per answer column; the position bias and unparsed reasons below it."""
    criteria = result["criteria"]
    human = any(c["human"] is not None for c in result["columns"].values())
    table = Table(title=f"judge: {escape(result['file'])} ({result['rows']} rows, {result['judge']['repeats']} "
                        f"repeats{', pairwise' if result['pairwise'] else ''})")
    table.add_column("answers")
    table.add_column("items", justify="right")
    for c in criteria:
        table.add_column(escape(c), justify="right")
    for head in ("overall [95% CI]", "judge SD", "unparsed", "length", "length ρ"):
        table.add_column(head, justify="right")
    if human:
        table.add_column("human ρ", justify="right")
        table.add_column("human α", justify="right")
    for name, st in result["columns"].items():
        row = [escape(name) + ("" if st["show_reference"] or result["reference_field"] is None else " (no ref)"),
               f"{st['items']}" + (f" (+{st['missing']} skipped)" if st["missing"] else "")]
        row += [_num(st["criteria"][c]["mean"]) for c in criteria]
        row += [_mean_ci(st["overall"]), _num(st["overall"]["judge_sd"]), f"{st['unparsed']}/{st['judgements']}",
                _num(st["mean_length_chars"], 0), _num(st["length_bias"]["rho"])]
        if human:
            h = st["human"] or {}
            row += [_num(h.get("spearman")), _num(h.get("alpha"))]
        table.add_row(*row)
    console.print(table)
    pos = result.get("position_bias")
    if pos:
        p = pos["overall"]
        rate = "–" if p["rate"] is None else f"{p['rate']:.2f}"
        console.print(f"position bias: {p['follows_position']}/{p['decided']} pairs follow the position (rate {rate}; "
                      f"first {p['first_position']}, second {p['second_position']}), {p['consistent']} consistent, "
                      f"{p['skipped']} skipped (ties or unparsed); mean first-position advantage "
                      f"{_num(p['mean_first_advantage'])}", markup=False, highlight=False)
    reasons: dict[str, int] = {}
    for st in result["columns"].values():
        for why, n in st["unparsed_reasons"].items():
            reasons[why] = max(reasons.get(why, 0), n) if result["pairwise"] else reasons.get(why, 0) + n
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        console.print("unparsed verdicts (never scored): " + "; ".join(f"{n}× {why}" for why, n in top),
                      markup=False, highlight=False)


@app.command()
@user_errors
def judge(
    file: Path = typer.Argument(..., help="Questions with reference answers and one column per system's answers "
                                "(CSV, TSV, JSONL, JSON, Parquet, Excel)."),
    answers: list[str] = typer.Option(..., "--answers", "-a", help="Answer column to judge (repeat for several; "
                                      "the reference column itself is judged without being shown as reference)."),
    question_field: str = typer.Option("question", "--question-field", help="Column of questions."),
    reference_field: str = typer.Option("answer", "--reference-field", help="Column of reference answers."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Judge without reference answers."),
    judge_model: str = typer.Option(None, "--judge-model", help="Local judge: smollm2 (default), a HF folder or "
                                    "hub id, a .gguf file or a fine-tuned run."),
    base_url: str = typer.Option(None, "--base-url", help="API judge: an OpenAI-compatible endpoint (an API, vLLM, "
                                 "`annotune serve`)."),
    model: str = typer.Option(None, "--model", help="API judge: the model name."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="API judge: NAME of the environment variable "
                                    "holding the key (the key is never printed or written)."),
    repeats: int = typer.Option(3, "--repeats", "-k", min=1, max=100, help="Judge calls per item."),
    seed: int = typer.Option(0, "--seed", help="Seed of the answer orders (and of API requests)."),
    rubric: Path = typer.Option(None, "--rubric", help="Rubric TOML (criteria, scale_min, scale_max, "
                                "show_reference, instructions; top level or a \\[rubric] table)."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the first N rows."),
    pairwise: bool = typer.Option(False, "--pairwise", help="Judge two answer columns together, in both orders, "
                                  "and report the position bias."),
    human_field: list[str] = typer.Option(None, "--human-field", help="Column of human grades (ANSWER=COLUMN with "
                                          "several answer columns) for judge-human agreement."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the full results (per item, per repeat, raw "
                                "judge outputs) to this JSON file."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, max=8192, help="Token limit of a verdict."),
    structured: bool = typer.Option(False, "--structured", help="A JSON-schema verdict: an API judge gets a "
                                    "response_format; a local judge chooses each score of a verdict annotune "
                                    "writes (small local models rarely write a verdict on their own)."),
    dtype: str = typer.Option("auto", "--dtype", help="Local judge: auto, bf16, fp16 or fp32."),
    quiet: bool = quiet_option(),
):
    """Grade open answers against reference answers with an LLM judge, k times, and measure the judge: scores
    per criterion with 95% intervals, its own spread, unparsed verdicts, length bias, position bias
    (--pairwise) and agreement with human grades."""
    from annotune.errors import ConfigError
    from annotune.judging import Judge, judge_file, load_rubric, parse_human_fields

    quiet_libraries()
    if base_url is None and (model or api_key_env):
        raise ConfigError("--model and --api-key-env are for an API judge (--base-url)",
                          field="--base-url")
    if base_url is not None:
        if judge_model:
            raise ConfigError("--judge-model is a local judge; an API judge takes --base-url and --model",
                              field="--judge-model")
        if not model:
            raise ConfigError("an API judge (--base-url) needs --model", field="--model")
    the_rubric = load_rubric(rubric) if rubric else None
    humans = parse_human_fields(human_field, list(dict.fromkeys(answers)))
    if base_url is not None:
        info = {"backend": "api", "base_url": base_url, "model": model, "api_key_env": api_key_env}

        def make() -> Judge:
            return Judge("api", base_url=base_url, model=model, api_key_env=api_key_env, rubric=the_rubric,
                         repeats=repeats, seed=seed, max_tokens=max_tokens, structured=structured)
    else:
        info = {"backend": "local", "model": judge_model or "smollm2", "dtype": dtype, "structured": structured}

        def make() -> Judge:
            if not quiet:
                log(f"loading the judge {info['model']}")
            return Judge("local", model=judge_model or "smollm2", rubric=the_rubric, repeats=repeats, seed=seed,
                         max_tokens=max_tokens, dtype=dtype, structured=structured)
    result = judge_file(file, answers, judge=make, question_field=question_field,
                        reference_field=None if no_reference else reference_field, pairwise=pairwise,
                        human_fields=humans, limit=limit, progress=not quiet, log=None if quiet else log,
                        judge_info=info)
    render(result)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"full results: {output}", markup=False, highlight=False)
