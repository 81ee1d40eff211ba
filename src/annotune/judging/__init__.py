"""LLM-as-a-judge whose own reliability is measured (issue 12).

- `rubric`: `Rubric` (criteria, integer scale, reference shown or not), the chat asking for a JSON
  verdict, and `parse_verdict`, which reads what judges write and never guesses (an unparsed verdict is
  counted and reported, never scored);
- `scores`: the probability-weighted score at a score token (`expected_score`), repeated-judging
  statistics (`repeat_stats`), position and length bias, agreement between judges or with humans
  (Spearman ρ, Krippendorff's α);
- `config`: `JudgeConfig`, a comparison's ``[judge]`` table;
- `guided`: `guided_verdict`, a local judge's verdict written by annotune with each score chosen by the model;
- `judge`: `Judge`, k seeded repeats (answer order rotated per repeat) through a local model or any
  OpenAI-compatible endpoint, with expected scores from log-probabilities where the backend gives them;
- `run`: `judge_file`, the answer columns of a data file judged and the judge measured (``annotune judge``).
"""

from annotune.judging.config import JudgeConfig
from annotune.judging.guided import guided_verdict
from annotune.judging.judge import (
    ApiJudgeBackend,
    Completion,
    Judge,
    JudgeBackend,
    JudgeCallError,
    JudgedRepeat,
    Judgement,
    LocalJudgeBackend,
    TokenLogprobs,
    expected_from_tokens,
    judgement_stats,
    pair_position_bias,
    unparsed_reasons,
)
from annotune.judging.rubric import Criterion, Rubric, Verdict, parse_verdict
from annotune.judging.run import column_stats, judge_file, load_rubric, parse_human_fields, reference_hidden
from annotune.judging.scores import (
    Agreement,
    Correlation,
    PositionBias,
    RepeatStats,
    agreement,
    expected_score,
    length_bias,
    position_bias,
    position_bias_from_scores,
    repeat_stats,
    score_distribution,
)

__all__ = [
    "Agreement", "ApiJudgeBackend", "Completion", "Correlation", "Criterion", "Judge", "JudgeBackend",
    "JudgeCallError", "JudgeConfig", "JudgedRepeat", "Judgement", "LocalJudgeBackend", "PositionBias",
    "RepeatStats", "Rubric", "TokenLogprobs", "Verdict", "agreement", "column_stats", "expected_from_tokens",
    "expected_score", "guided_verdict", "judge_file", "judgement_stats", "length_bias", "load_rubric",
    "pair_position_bias", "parse_human_fields", "parse_verdict", "position_bias", "position_bias_from_scores",
    "reference_hidden", "repeat_stats", "score_distribution", "unparsed_reasons",
]
