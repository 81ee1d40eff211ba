"""Loading an output folder and rendering its report through the Jinja2 templates in ``templates/``.

- ``report.html``: one self-contained file (CSS inside the template, figures embedded as base64 PNG data
  URIs, no scripts, no external resources), so that it can be mailed or archived;
- ``report.md`` with the figures as PNG files in ``figures/``.

The look is the templates' business: edit ``templates/report.html`` or ``templates/report.md`` (or point
`environment` at a folder of your own with the same two names) without touching code. HTML is autoescaped:
every user string (system and label names, config text) arrives as text, never as markup.
"""

from __future__ import annotations

import base64
import json
import time
from functools import lru_cache
from pathlib import Path

import jinja2

from annotune.errors import ConfigError
from annotune.report.format import md_cell, number, results_task
from annotune.report.sections import Section, build_sections

TEMPLATES = Path(__file__).with_name("templates")


# ---------------------------------------------------------------------------- loading
def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}", file=path) from None


def load_report_data(folder: str | Path) -> dict:
    """results.json of an output folder, with the learning curve (curve/curve.json) under ``"curve"``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("not an output folder of `annotune compare` or `annotune curve`", file=folder)
    path = folder / "results.json"
    if not path.is_file():
        raise ConfigError("no results.json here: run `annotune compare` or `annotune curve` into this folder first",
                          file=folder)
    results = _read_json(path, "results.json")
    curve_path = folder / "curve" / "curve.json"
    if curve_path.is_file():
        results["curve"] = _read_json(curve_path, "curve.json")
    return results


# ---------------------------------------------------------------------------- rendering
def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, so that the HTML needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@lru_cache(maxsize=4)
def environment(folder: str | None = None) -> jinja2.Environment:
    """The templates' environment (``folder``: templates of your own instead of the shipped ones)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder or str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["data_uri"] = data_uri
    env.filters["md_cell"] = md_cell
    env.filters["number"] = number
    return env


def _context(results: dict, sections: list[Section]) -> dict:
    task = results["task"]["task"]
    return {"title": f"annotune report — {results.get('name', task['name'])}",
            "kind_words": results_task(results).description, "task": task, "n_labels": len(results["task"]["labels"]),
            "n_test": results["data"]["test"], "created": str(results.get("created", "")),
            "sections": sections, "written": time.strftime("%Y-%m-%d %H:%M"),
            "sources": "results.json" + (" and curve/curve.json" if results.get("curve") else "")}


def render_html(results: dict, sections: list[Section], templates: str | None = None) -> str:
    return environment(templates).get_template("report.html").render(_context(results, sections))


def render_markdown(results: dict, sections: list[Section], figures_dir: str = "figures",
                    templates: str | None = None) -> str:
    text = environment(templates).get_template("report.md").render(**_context(results, sections),
                                                                   figures_dir=figures_dir)
    return text.rstrip() + "\n"


def _name_figures(sections: list[Section]) -> None:
    """Distinct file names for figures whose names slug alike (two systems "a b" and "a-b")."""
    names: set[str] = set()
    for s in sections:
        for fig in s.figures:
            base, k = fig.name, 2
            while fig.name in names:
                fig.name = f"{base}-{k}"
                k += 1
            names.add(fig.name)


def write_report(folder: str | Path, output: str | Path | None = None) -> dict[str, Path]:
    """Write report.html (self-contained), report.md and figures/*.png for an output folder; returns the
    paths. ``output``: another folder to write them to (default: the output folder itself)."""
    folder = Path(folder)
    results = load_report_data(folder)
    target = Path(output) if output else folder
    target.mkdir(parents=True, exist_ok=True)
    sections = build_sections(results)
    _name_figures(sections)
    figures_dir = target / "figures"
    figures_dir.mkdir(exist_ok=True)
    for old in figures_dir.glob("*.png"):  # figures of systems no longer in the results
        old.unlink()
    for s in sections:
        for fig in s.figures:
            (figures_dir / f"{fig.name}.png").write_bytes(fig.png)
    paths = {"html": target / "report.html", "markdown": target / "report.md", "figures": figures_dir}
    for key, text in (("html", render_html(results, sections)), ("markdown", render_markdown(results, sections))):
        tmp = paths[key].with_name(paths[key].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[key])
    return paths


__all__ = ["load_report_data", "write_report", "render_html", "render_markdown", "environment", "data_uri"]
