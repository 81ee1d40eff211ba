"""Numbers about judge scores: the probability-weighted score at a score token, statistics of repeated
judging, position and length bias, and agreement between two judges (or a judge and humans).

Missing values (``None`` or NaN: an unparsed verdict, an item a judge did not grade) are allowed
everywhere and counted; they are never replaced by a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


# ---------------------------------------------------------------------------------- expected score
def _score_of(token: str, lo: int, hi: int) -> int | None:
    """The score a token stands for: an integer of the scale after stripping spaces, written plainly
    (ASCII digits, no sign, no leading zero)."""
    s = token.strip()
    if not s or not s.isascii() or not s.isdigit() or (len(s) > 1 and s[0] == "0"):
        return None
    v = int(s)
    return v if lo <= v <= hi else None


def _extends(prefix: str, lo: int, hi: int) -> bool:
    """Whether some score of the scale is written with more digits starting with ``prefix`` ("1" → 10)."""
    return any(str(v).startswith(prefix) and len(str(v)) > len(prefix) for v in range(lo, hi + 1))


def _prob(lp: float) -> float:
    """A log-probability as a probability (0 for anything that is not one; rounding above 0 is 1)."""
    if not isinstance(lp, (int, float)) or math.isnan(lp) or lp > 1e-6:
        return 0.0
    return min(1.0, math.exp(lp))


def score_distribution(top_logprobs: dict[str, float], scale_min: int, scale_max: int, *,
                       chosen: str | None = None, next_logprobs: dict[str, float] | None = None
                       ) -> tuple[dict[int, float], float]:
    """The probability of each score at the position where a score is written, renormalised over the
    score tokens, and the ``mass`` those tokens had before renormalising.

    ``top_logprobs`` maps each alternative token at that position to its log-probability; tokens that
    are not an integer of the scale after stripping spaces are ignored (they only lower ``mass``). Tokens
    that strip to the same score add up.

    Multi-digit scores: a score past 9 may be one token ("10") or several ("1", "0"). Where the token the
    judge actually wrote (``chosen``) is a digit prefix of a longer score, and the distribution of the
    token after it (``next_logprobs``) is known, its probability is split: the part followed by a
    digit continues the number (``"1"`` then ``"0"`` → 10; a continuation outside the scale is dropped),
    the part followed by anything else ends it (→ 1), and the part of the next position missing from its
    top list is dropped. Every other token stands for its own value ("1" counts as 1): the next-token
    distribution after a token the judge did not write is unknown, so such scores lean low; ``mass``
    and the argmax score remain as checks.
    """
    lo, hi = scale_min, scale_max
    probs: dict[int, float] = {}
    split = (chosen is not None and bool(next_logprobs) and _score_of(chosen, 0, 10 ** 9) is not None
             and _extends(chosen.strip(), lo, hi))
    for token, lp in top_logprobs.items():
        p = _prob(lp)
        if p <= 0:
            continue
        if split and token == chosen:
            head = chosen.strip()
            for nxt, nlp in next_logprobs.items():  # type: ignore[union-attr]
                q = _prob(nlp)
                digits = len(nxt) - len(nxt.lstrip("0123456789"))
                value = _score_of(head + nxt[:digits], lo, hi) if digits else _score_of(head, lo, hi)
                if value is not None and q > 0:
                    probs[value] = probs.get(value, 0.0) + p * q
            continue
        value = _score_of(token, lo, hi)
        if value is not None:
            probs[value] = probs.get(value, 0.0) + p
    mass = float(sum(probs.values()))
    if mass <= 0:
        return {}, 0.0
    return {v: p / mass for v, p in sorted(probs.items())}, min(mass, 1.0)


def expected_score(top_logprobs: dict[str, float], scale_min: int, scale_max: int, *,
                   chosen: str | None = None, next_logprobs: dict[str, float] | None = None
                   ) -> tuple[float | None, float]:
    """``(expected, mass)``: the probability-weighted score over the score tokens (see
    `score_distribution`; None when no token of the scale is there) and their probability mass."""
    dist, mass = score_distribution(top_logprobs, scale_min, scale_max, chosen=chosen, next_logprobs=next_logprobs)
    if not dist:
        return None, 0.0
    return float(sum(v * p for v, p in dist.items())), mass


# ---------------------------------------------------------------------------------- repeated judging
def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


@dataclass
class RepeatStats:
    """Statistics of k repeated judgements of n items (see `repeat_stats`)."""

    n_items: int
    k: int
    judgements: int
    unparsed: int
    items_scored: int
    item_means: list[float | None]
    item_sds: list[float | None]
    mean: float | None
    ci: tuple[float, float] | None
    judge_sd: float | None
    interval: str

    def as_dict(self) -> dict:
        return asdict(self)


def repeat_stats(scores: Sequence[Sequence[float | None]], *, interval: str = "t", ci: float = 0.95,
                 n_boot: int = 2000, seed: int = 0) -> RepeatStats:
    """Statistics of repeated judging: ``scores[i][r]`` is item i's score in repeat r (None/NaN: the
    verdict was not parsed).

    - ``item_means``: each item's mean over its parsed repeats (None when none parsed);
    - ``mean``: the mean of the item means, over the items with one at least;
    - ``ci``: its interval over items — ``interval="t"`` (default): mean ± t(ci, m-1)·sd/√m over the m
      item means; ``"bootstrap"``: seeded percentile bootstrap of the item means (``n_boot`` resamples).
      None with fewer than 2 scored items;
    - ``judge_sd``: the judge's own spread, the mean over items of the SD (ddof=1) of their parsed
      repeats, over items with 2 or more (None if no item has 2);
    - ``unparsed``: the judgements that gave no score, out of ``judgements``."""
    if interval not in ("t", "bootstrap"):
        raise ValueError("interval must be 't' or 'bootstrap'")
    means: list[float | None] = []
    sds: list[float | None] = []
    unparsed = total = 0
    for row in scores:
        vals = [float(x) for x in row if not _missing(x)]
        total += len(row)
        unparsed += len(row) - len(vals)
        means.append(float(np.mean(vals)) if vals else None)
        sds.append(float(np.std(vals, ddof=1)) if len(vals) >= 2 else None)
    scored = np.array([m for m in means if m is not None], dtype=float)
    mean = float(scored.mean()) if scored.size else None
    bounds = None
    if scored.size >= 2:
        if interval == "t":
            from scipy import stats

            t = float(stats.t.ppf(0.5 + ci / 2, scored.size - 1))
            half = t * float(scored.std(ddof=1)) / math.sqrt(scored.size)
            bounds = (mean - half, mean + half)
        else:
            rng = np.random.default_rng(seed)
            boot = scored[rng.integers(0, scored.size, size=(n_boot, scored.size))].mean(axis=1)
            lo, hi = np.percentile(boot, [100 * (1 - ci) / 2, 100 * (1 + ci) / 2])
            bounds = (float(lo), float(hi))
    spread = [s for s in sds if s is not None]
    return RepeatStats(n_items=len(means), k=max((len(r) for r in scores), default=0), judgements=total,
                       unparsed=unparsed, items_scored=int(scored.size), item_means=means, item_sds=sds, mean=mean,
                       ci=bounds, judge_sd=float(np.mean(spread)) if spread else None, interval=interval)


# ---------------------------------------------------------------------------------- biases
@dataclass
class PositionBias:
    """Pairs judged in both orders: how often the verdict follows the position rather than the answer."""

    pairs: int  # pairs given
    decided: int  # pairs with a winner in both orders
    skipped: int  # pairs with a tie or an unparsed verdict in either order
    consistent: int  # the same answer wins in both orders
    follows_position: int  # the same position wins in both orders (first_position + second_position)
    first_position: int  # the first-shown answer wins in both orders
    second_position: int  # the second-shown answer wins in both orders
    rate: float | None  # follows_position / decided (0: no position effect; 0.5: a coin flip)
    first_win_rate: float | None  # share of the 2·decided verdicts won by the first-shown answer
    mean_first_advantage: float | None = None  # mean (first − second) score, from scores only
    ties: int | None = None
    unparsed: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def position_bias(first_wins_ab: Sequence[bool | None], first_wins_ba: Sequence[bool | None]) -> PositionBias:
    """Position bias of a judge from pairs judged in both orders: ``first_wins_ab[i]`` says whether the
    answer shown first won when pair i was shown as (X, Y), ``first_wins_ba[i]`` the same for (Y, X);
    None: a tie or no verdict (such pairs are skipped and counted). A judge that follows the answer
    gives opposite values in the two orders; equal values mean the position won."""
    if len(first_wins_ab) != len(first_wins_ba):
        raise ValueError(f"both orders need one value per pair: {len(first_wins_ab)} vs {len(first_wins_ba)}")
    both = [(a, b) for a, b in zip(first_wins_ab, first_wins_ba) if a is not None and b is not None]
    first = sum(1 for a, b in both if a and b)
    second = sum(1 for a, b in both if not a and not b)
    n = len(both)
    return PositionBias(pairs=len(first_wins_ab), decided=n, skipped=len(first_wins_ab) - n,
                        consistent=n - first - second,
                        follows_position=first + second, first_position=first, second_position=second,
                        rate=(first + second) / n if n else None,
                        first_win_rate=sum(a + b for a, b in both) / (2 * n) if n else None)


def position_bias_from_scores(ab: Sequence[tuple[float | None, float | None] | None],
                              ba: Sequence[tuple[float | None, float | None] | None]) -> PositionBias:
    """`position_bias` from scores: ``ab[i] = (score of the first shown, score of the second)`` when
    pair i was shown as (X, Y), ``ba[i]`` the same when shown as (Y, X); None where unparsed. Adds the
    mean score advantage of the first position over every scored order, and ties/unparsed counts."""
    def wins(pair) -> bool | None:
        if pair is None or _missing(pair[0]) or _missing(pair[1]) or pair[0] == pair[1]:
            return None
        return pair[0] > pair[1]

    def scored(pair) -> bool:
        return pair is not None and not _missing(pair[0]) and not _missing(pair[1])

    out = position_bias([wins(p) for p in ab], [wins(p) for p in ba])
    diffs = [p[0] - p[1] for p in list(ab) + list(ba) if scored(p)]
    out.mean_first_advantage = float(np.mean(diffs)) if diffs else None
    out.ties = sum(1 for p in list(ab) + list(ba) if scored(p) and p[0] == p[1])
    out.unparsed = sum(1 for p in list(ab) + list(ba) if not scored(p))
    return out


@dataclass
class Correlation:
    """A rank correlation with its p-value over the n pairs where both values are present."""

    rho: float | None
    p_value: float | None
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def _pairs(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"the two series must have the same length: {len(a)} vs {len(b)}")
    keep = [(float(x), float(y)) for x, y in zip(a, b) if not _missing(x) and not _missing(y)]
    return np.array([x for x, _ in keep], dtype=float), np.array([y for _, y in keep], dtype=float)


def _spearman(x: np.ndarray, y: np.ndarray) -> Correlation:
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return Correlation(None, None, int(x.size))  # undefined: too few pairs or a constant series
    from scipy import stats

    res = stats.spearmanr(x, y)
    return Correlation(float(res.statistic), float(res.pvalue), int(x.size))


def length_bias(scores: Sequence[float | None], lengths: Sequence[float | None]) -> Correlation:
    """Spearman ρ between scores and answer lengths (characters, words or tokens), with its p-value, over
    the answers with a score; ρ near 0: no length bias. None when undefined (fewer than 3 pairs, or a
    constant series)."""
    return _spearman(*_pairs(scores, lengths))


@dataclass
class Agreement:
    """Agreement of two series of scores on the same items."""

    spearman: float | None
    spearman_p: float | None
    alpha: float | None  # Krippendorff's α, interval level
    n: int  # items scored in both
    n_a: int
    n_b: int

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(a: Sequence[float | None], b: Sequence[float | None]) -> Agreement:
    """Spearman ρ (scipy, over items scored by both) and Krippendorff's α (``krippendorff``, interval
    level, missing values allowed) between two judges, or a judge and human grades, on the same items.
    Undefined values are None."""
    x, y = _pairs(a, b)
    rho = _spearman(x, y)
    alpha = None
    if x.size >= 2 and not (np.all(x == x[0]) and np.all(y == x[0])):
        import krippendorff

        data = np.array([[np.nan if _missing(v) else float(v) for v in a],
                         [np.nan if _missing(v) else float(v) for v in b]], dtype=float)
        try:
            alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))
        except (ValueError, ZeroDivisionError):
            alpha = None
        if alpha is not None and math.isnan(alpha):
            alpha = None
    return Agreement(spearman=rho.rho, spearman_p=rho.p_value, alpha=alpha, n=rho.n,
                     n_a=sum(not _missing(v) for v in a), n_b=sum(not _missing(v) for v in b))


__all__ = ["Agreement", "Correlation", "PositionBias", "RepeatStats", "agreement", "expected_score", "length_bias",
           "position_bias", "position_bias_from_scores", "repeat_stats", "score_distribution"]
