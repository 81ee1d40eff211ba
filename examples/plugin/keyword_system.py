"""A whole new system type in a dozen lines: label a document by the first keyword it contains.

Register it by importing this module (or, in a package, through the `annotune.systems` entry point), then
use it in a config: ``[[systems]]  name = "keywords"  type = "keywords"  keywords = {sport = ["match"]}``.
"""

from typing import Literal

from annotune.backends.base import Prediction, RunStats
from annotune.systems import System, SystemConfig, register_system


class KeywordConfig(SystemConfig):
    type: Literal["keywords"] = "keywords"
    keywords: dict[str, list[str]]  # label -> words that signal it


@register_system
class KeywordSystem(System):
    type = "keywords"
    config_class = KeywordConfig

    def run(self, train, test):
        def label(text: str):
            hits = [name for name, words in self.config.keywords.items() if any(w in text.lower() for w in words)]
            return hits[0] if hits else None  # no keyword: INVALID, never a guess

        preds = [Prediction(d.id, label(d.text) or "", label(d.text)) for d in test.docs]
        return preds, RunStats(docs=len(test))
