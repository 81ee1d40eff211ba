"""Reports a researcher can put in a paper: `annotune report <output folder>`.

Reads what `compare` and `curve` stored in an output folder (``results.json`` and, when a learning curve
was run, ``curve/curve.json``) and writes next to them a self-contained ``report.html`` and ``report.md``
with its figures in ``figures/``.

- `render`: loading the folder, the Jinja2 environment, `write_report`;
- `sections`: the document model (sections of paragraphs, tables, lists, figures) built from the results;
- `figures`: the matplotlib figures; `methods`: the methods paragraph;
- `format`: number and name formatting (also used by the CLI), the task kind of a results dict;
- ``templates/report.html`` and ``templates/report.md``: the look, editable without code.
"""

from annotune.report.methods import methods_paragraph
from annotune.report.render import load_report_data, write_report

__all__ = ["write_report", "load_report_data", "methods_paragraph"]
