"""`type = "reference"`: the dataset's own labels as a row of the table.

For classification this is the ceiling every metric is measured against (1.0); for open question answering
(``qa``) it is the row the Sarus study reports next to the models: the reference answers graded by the same
LLM judge (a comparison's ``[judge]`` table; the judge is then not shown the reference, which would be a copy).
"""

from __future__ import annotations

from typing import Literal

from annotune.backends.base import Prediction, RunStats
from annotune.systems.base import System, SystemConfig, register_system


class ReferenceConfig(SystemConfig):
    type: Literal["reference"] = "reference"


@register_system
class ReferenceSystem(System):
    """Answers every test document with its gold label."""

    type = "reference"
    open_answers = True
    config_class = ReferenceConfig

    @classmethod
    def describe(cls, record: dict) -> str:
        return f"the dataset's own reference labels (“{record['name']}”)"

    def run(self, train, test):
        task = self.context.codebook.task
        preds = [Prediction(d.id, task.answer_text(d.label), d.label) for d in test.docs]
        return preds, RunStats(docs=len(preds))
