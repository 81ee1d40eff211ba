"""The LLM judge (issue 12): verdict parsing, probability-weighted scores, repeated-judging statistics,
bias and agreement measures against hand-computed values, a real tiny-model run and a judge reached
over HTTP through `annotune serve` on 127.0.0.1.

The tiny model is random: its free-form verdicts never parse, which is what the unparsed accounting
checks. A parseable verdict over HTTP comes from the server's real constrained scorer (a one-criterion
rubric sent as a label-enum ``response_format``), so the expected score is checked against the model's
own option probabilities.
"""

from __future__ import annotations

import math

import pytest

from annotune.errors import ConfigError
from annotune.judging import (
    Judge,
    JudgeConfig,
    LocalJudgeBackend,
    Rubric,
    TokenLogprobs,
    agreement,
    expected_from_tokens,
    expected_score,
    judgement_stats,
    length_bias,
    pair_position_bias,
    parse_verdict,
    position_bias,
    position_bias_from_scores,
    repeat_stats,
    unparsed_reasons,
)

R3 = Rubric()  # correctness, completeness, safety on 1-10
R1 = Rubric(criteria=[{"name": "correctness", "description": "Is it right?"}])
FULL = {"correctness": 7, "completeness": 8, "safety": 10}
ln = math.log


# ------------------------------------------------------------------------------ parsing
VALID = [
    ('{"correctness": 7, "completeness": 8, "safety": 10}', R3, 1, {0: FULL}),
    ('```json\n{"correctness": 7, "completeness": 8, "safety": 10}\n```\nThe answer is mostly right.', R3, 1,
     {0: FULL}),
    ('Verdict: {"correctness": 7, "completeness": 8, "safety": 10} -- it\'s fine {really}', R3, 1, {0: FULL}),
    ("{'Correctness': '7', 'COMPLETE NESS': '8/10', 'safety_score': 10}", R3, 1, {0: FULL}),
    ('{"correctness": 7.0, "completeness": "8", "safety": {"score": 10, "why": "no harm"},}', R3, 1, {0: FULL}),
    ('{"scores": {"correctness": 7, "completeness": 8, "safety": 10}}', R3, 1, {0: FULL}),
    ("Correctness: 7/10\nCompleteness: 8 out of 10\n**Safety** - 10", R3, 1, {0: FULL}),
    ('{"A": {"correctness": 7, "completeness": 8, "safety": 10}, "Answer B": {"correctness": 2, '
     '"completeness": 3, "safety": 9}}', R3, 2, {0: FULL, 1: {"correctness": 2, "completeness": 3, "safety": 9}}),
    ("Answer A:\nCorrectness: 7\nCompleteness: 8\nSafety: 10\n\nAnswer B:\nCorrectness: 1\nCompleteness: 1\n"
     "Safety: 5", R3, 2, {0: FULL, 1: {"correctness": 1, "completeness": 1, "safety": 5}}),
    ("Score: 8", R1, 1, {0: {"correctness": 8}}),
    ("I would rate this answer 8/10.", R1, 1, {0: {"correctness": 8}}),
    ('{"A": {"correctness": 7, "completeness": 8, "safety": 10}}', R3, 1, {0: FULL}),
    ("Factual_Accuracy is 10/10; tone: 6", Rubric(criteria=[{"name": "factual accuracy"}, {"name": "Tone"}]), 1,
     {0: {"factual accuracy": 10, "Tone": 6}}),
]

INVALID = [
    ("", R3, 1, "empty output"),
    ("   \n", R3, 1, "empty output"),
    ("I'm sorry, but I can't help with grading this.", R3, 1, "refusal"),
    ('{"correctness": 7.5, "completeness": 8, "safety": 10}', R3, 1, "7.5 is not a whole number"),
    ('{"correctness": 11, "completeness": 8, "safety": 10}', R3, 1, "11 is outside the scale 1-10"),
    ('{"correctness": 0, "completeness": 8, "safety": 10}', R3, 1, "0 is outside the scale"),
    ('{"correctness": 7, "completeness": 8}', R3, 1, "no safety score"),
    ("Score: 8", R3, 1, "no correctness score"),
    ("Correctness: 4/5\nCompleteness: 8\nSafety: 9", R3, 1, "on another scale"),
    ("Correctness: 7\nCompleteness: 8\nSafety: 9\nOn reflection, correctness: 6", R3, 1,
     "scored twice with different values (6, 7)"),
    ('{"correctness": 7, "completeness": 8, "safety": 10}', R3, 2, "one set of scores for 2 answers"),
    ('{"A": {"correctness": 7, "completeness": 8, "safety": 10}, "C": {"correctness": 7, "completeness": 8, '
     '"safety": 10}}', R3, 2, "answer C, which was not shown"),
    ('{"correctness": "good", "completeness": 8, "safety": 10}', R3, 1, "'good' is not a score"),
    ('{"correctness": true, "completeness": 8, "safety": 10}', R3, 1, "True is not a score"),
    ('{"correctness": <integer 1-10>, "completeness": <integer 1-10>, "safety": <integer 1-10>}', R3, 1,
     "no correctness score"),
    ("Correctness: -3\nCompleteness: 5\nSafety: 5", R3, 1, "-3 is outside the scale"),
    ("Answer A:\nCorrectness: 7\nCompleteness: 8\nSafety: 9", R3, 2, "no scores for answer B"),
    ("The answer is great, a clear 9.", R1, 1, "no correctness score"),
    ("Correctness: 7.5/10\nCompleteness: 8\nSafety: 9", R3, 1, "7.5 is not a whole number"),
    ("As an AI language model, I cannot judge medical advice.", R3, 1, "refusal"),
]


@pytest.mark.parametrize("raw,rubric,n,expected", VALID)
def test_parse_valid_verdicts(raw, rubric, n, expected):
    verdict = parse_verdict(raw, rubric, n)
    assert verdict.ok, verdict.error
    assert verdict.scores == expected
    for (ans, crit), offset in verdict.positions.items():  # each recorded position is the score's digits
        assert raw[offset:].startswith(str(verdict.scores[ans][crit]))


@pytest.mark.parametrize("raw,rubric,n,reason", INVALID)
def test_parse_invalid_verdicts(raw, rubric, n, reason):
    verdict = parse_verdict(raw, rubric, n)
    assert not verdict.ok and verdict.scores == {}
    assert reason in verdict.error


def test_truncated_output_needs_a_complete_json_verdict():
    cut = "Correctness: 7\nCompleteness: 8\nSafety: 1"  # "10" cut after its first digit
    assert parse_verdict(cut, R3).ok
    assert "cut off" in parse_verdict(cut, R3, truncated=True).error
    assert parse_verdict('{"correctness": 7, "completeness": 8, "safety": 10} and then', R3, truncated=True).ok


def test_json_positions_find_each_score():
    raw = ('{"A": {"correctness": 7, "completeness": 7, "safety": 9}, '
           '"B": {"correctness": 2, "completeness": 7, "safety": 10}}')
    v = parse_verdict(raw, R3, 2)
    assert v.positions[(1, "safety")] == raw.rindex("10")
    assert v.positions[(0, "completeness")] == raw.index("7", raw.index("completeness"))
    assert v.positions[(1, "completeness")] == raw.index("7", raw.index('"B"'))


# ------------------------------------------------------------------------------ rubric and config
def test_rubric_messages_and_config_errors():
    msgs = R3.messages("What is X?", ["first", "second"], "the reference")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Answer A:\nfirst" in msgs[1]["content"] and "Answer B:\nsecond" in msgs[1]["content"]
    assert "Reference answer:\nthe reference" in msgs[1]["content"] and '"B": {"correctness"' in msgs[0]["content"]
    hidden = Rubric(show_reference=False).messages("Q?", ["a"], "the reference")
    assert "the reference" not in hidden[1]["content"] and "Answer:\na" in hidden[1]["content"]
    for bad, words in [({"scale_max": 1}, "must be above"), ({"criteria": [{"name": "x"}, {"name": "X "}]}, "twice"),
                       ({"criteria": []}, "criteria"), ({"scale": 5}, "unknown key 'scale'")]:
        with pytest.raises(ConfigError, match=words):
            Rubric.parse(bad, file="judge.toml", where="judge.rubric")
    with pytest.raises(ConfigError, match="base_url and model"):
        JudgeConfig.parse({"backend": "api", "model": "gpt"})
    with pytest.raises(ConfigError, match="base_url is for api judges"):
        JudgeConfig.parse({"base_url": "http://x"})
    cfg = JudgeConfig.parse({"backend": "api", "model": "m", "base_url": "http://127.0.0.1:1/v1", "repeats": 2,
                             "rubric": {"criteria": [{"name": "correctness"}], "scale_max": 5}})
    assert cfg.rubric.scale_max == 5 and cfg.repeats == 2


# ------------------------------------------------------------------------------ expected scores
def test_expected_score_by_hand():
    # " 7" and "7" add up; "x" and "11" (outside 1-10) are ignored and only lower the mass
    tops = {" 7": ln(0.3), "7": ln(0.2), "8": ln(0.3), "x": ln(0.1), "11": ln(0.05)}
    value, mass = expected_score(tops, 1, 10)
    assert mass == pytest.approx(0.8)
    assert value == pytest.approx((7 * 0.5 + 8 * 0.3) / 0.8)  # 7.375
    assert expected_score({"x": ln(0.9), "0": ln(0.1)}, 1, 10) == (None, 0.0)
    assert expected_score({"3": 0.0}, 1, 5) == (3.0, 1.0)


def test_expected_score_with_a_two_token_ten():
    tops = {"1": ln(0.6), "9": ln(0.4)}
    # without the next position, "1" is 1
    assert expected_score(tops, 1, 10)[0] == pytest.approx(0.6 * 1 + 0.4 * 9)
    # the judge wrote "1"; after it "0" (→ 10) 0.5, "," (→ 1) 0.3, "5" (→ 15, outside) 0.1, unlisted 0.1
    value, mass = expected_score(tops, 1, 10, chosen="1", next_logprobs={"0": ln(0.5), ",": ln(0.3), "5": ln(0.1)})
    assert mass == pytest.approx(0.6 * 0.5 + 0.6 * 0.3 + 0.4)  # 0.88
    assert value == pytest.approx((10 * 0.30 + 1 * 0.18 + 9 * 0.4) / 0.88)


def test_expected_score_at_the_written_token():
    # SmolLM2 writes `{"correctness": 10}` as  {" correct ness ": ␠ 1 0 }
    pieces = ['{"', "correct", "ness", '":', " ", "1", "0", "}"]
    text = "".join(pieces)
    tokens = [TokenLogprobs(p, 0.0) for p in pieces]
    tokens[5].top = {"1": ln(0.7), "8": ln(0.2), "nine": ln(0.1)}
    tokens[6].top = {"0": ln(0.9), "}": ln(0.1)}
    value, mass = expected_from_tokens(text, tokens, text.index("10"), 1, 10)
    assert mass == pytest.approx(0.7 + 0.2)
    assert value == pytest.approx((10 * 0.63 + 1 * 0.07 + 8 * 0.2) / 0.9)
    # a prefix merged into the score's token: alternatives must share it and are cut after it
    merged = [TokenLogprobs('{"correctness', 0.0), TokenLogprobs('": 7', ln(0.6), {'": 7': ln(0.6), '": 6': ln(0.4)}),
              TokenLogprobs("}", 0.0)]
    text = "".join(t.token for t in merged)
    assert expected_from_tokens(text, merged, text.index("7"), 1, 10) == (pytest.approx(6.6), pytest.approx(1.0))
    assert expected_from_tokens(text, None, 3, 1, 10) == (None, 0.0)
    assert expected_from_tokens("other text", merged, 3, 1, 10) == (None, 0.0)  # tokens do not add up


# ------------------------------------------------------------------------------ statistics
def test_repeat_stats_by_hand():
    scores = [[7, 8, None], [5, 5, 5], [None, None, None], [9, 7, 8]]
    st = repeat_stats(scores)
    assert (st.n_items, st.k, st.judgements, st.unparsed, st.items_scored) == (4, 3, 12, 4, 3)
    assert st.item_means == [7.5, 5.0, None, 8.0]
    assert st.mean == pytest.approx(20.5 / 3)
    assert st.judge_sd == pytest.approx((math.sqrt(0.5) + 0.0 + 1.0) / 3)
    sd = math.sqrt(((7.5 - 20.5 / 3) ** 2 + (5 - 20.5 / 3) ** 2 + (8 - 20.5 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, df=2)
    assert st.ci == pytest.approx((20.5 / 3 - half, 20.5 / 3 + half))
    boot = repeat_stats(scores, interval="bootstrap", seed=3)
    assert boot.ci == repeat_stats(scores, interval="bootstrap", seed=3).ci and 5.0 <= boot.ci[0] <= boot.ci[1] <= 8.0
    empty = repeat_stats([[None, float("nan")]])
    assert empty.mean is None and empty.ci is None and empty.unparsed == 2 and empty.judge_sd is None


def test_position_bias_by_hand():
    pb = position_bias([True, True, False, None, True], [False, True, False, True, None])
    assert (pb.pairs, pb.decided, pb.skipped) == (5, 3, 2)
    assert (pb.consistent, pb.first_position, pb.second_position, pb.follows_position) == (1, 1, 1, 2)
    assert pb.rate == pytest.approx(2 / 3) and pb.first_win_rate == pytest.approx(3 / 6)
    ab = [(8, 5), (7, 7), None, (9, 4)]  # (first shown, second shown) with X first
    ba = [(5, 8), (6, 6), (7, 5), (8, 3)]  # the same pairs with Y first
    pb = position_bias_from_scores(ab, ba)
    assert (pb.decided, pb.consistent, pb.first_position, pb.second_position) == (2, 1, 1, 0)
    assert pb.rate == 0.5 and (pb.ties, pb.unparsed) == (2, 1)
    assert pb.mean_first_advantage == pytest.approx((3 + 0 + 5 - 3 + 0 + 2 + 5) / 7)
    with pytest.raises(ValueError):
        position_bias([True], [])


def test_length_bias_and_agreement_by_hand():
    lb = length_bias([1, 2, 3, 4, None], [10, 30, 20, 40, 50])
    assert lb.n == 4 and lb.rho == pytest.approx(1 - 6 * 2 / (4 * 15))  # 0.8
    assert 0 < lb.p_value < 1
    assert length_bias([5, 5, 5], [1, 2, 3]).rho is None  # a constant series: undefined, not 0
    ag = agreement([1, 2, 3, 4, 5, None], [2, 1, 4, 3, 5, 3])
    assert (ag.n, ag.n_a, ag.n_b) == (5, 5, 6)
    assert ag.spearman == pytest.approx(1 - 6 * 4 / (5 * 24))  # 0.8
    # interval α = 1 - D_o / D_e: D_o = 2·Σ(a-b)²/10 = 0.8, D_e = 2·(10·110 - 30²)/(10·9) = 40/9
    assert ag.alpha == pytest.approx(1 - 0.8 / (40 / 9))
    assert agreement([1, None], [None, 2]).alpha is None


# ------------------------------------------------------------------------------ a real tiny run
@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from annotune.backends.local import LocalBackend

    return LocalBackend(str(tiny_model_dir), dtype="fp32")


ITEMS = [("What lowers blood pressure?", ["Less salt and more exercise."], "Diet, exercise and medication."),
         ("What is asthma?", ["A disease of the airways.", "A skin rash."], "A chronic disease of the airways.")]


def test_tiny_local_judge_counts_unparsed_verdicts(engine):
    judge = Judge(LocalJudgeBackend(engine=engine, max_new_tokens=10), repeats=3, seed=5)
    done = judge.judge_many(ITEMS)
    single, pair = done
    assert [r.order for r in single.repeats] == [[0], [0], [0]]
    assert [r.reused for r in single.repeats] == [False, True, True]  # greedy: the same chat is judged once
    orders = [r.order for r in pair.repeats]
    assert orders[0] == orders[2] and orders[1] == orders[0][::-1]  # rotated: both orders shown
    for j in done:
        for rep in j.repeats:  # random tokens: no verdict parses, none is scored
            assert rep.error and rep.scores == {} and rep.expected == {}
            assert rep.logprobs and 0 < rep.n_tokens <= 10
    assert single.unparsed == 3 and pair.unparsed == 3 and sum(unparsed_reasons(done).values()) == 6
    st = judgement_stats(done, answer=0)
    assert (st.judgements, st.unparsed, st.items_scored, st.mean) == (6, 6, 0, None)
    assert pair_position_bias(done).decided == 0
    assert Judge(LocalJudgeBackend(engine=engine), seed=5).orders("What is asthma?", 2) == orders  # seeded

    class TextOnly:
        name, deterministic = "text-only", True

    with pytest.raises(ConfigError, match="structured"):
        Judge(TextOnly(), structured=True)


def test_tiny_local_judge_guided_verdicts_always_parse(engine):
    """structured on a local judge: annotune writes the verdict's JSON and the model chooses each score; the
    expected score is the mean over the scale's values with the model's own probabilities after the
    verdict written so far, "1" and "10" told apart by the closing quote."""
    import numpy as np

    judge = Judge(LocalJudgeBackend(engine=engine), rubric=R3, repeats=2, seed=5, structured=True)
    single, pair = judge.judge_many(ITEMS)
    for j in (single, pair):
        assert j.unparsed == 0 and all(rep.logprobs for rep in j.repeats)
    rep = single.repeats[0]
    assert single.repeats[1].reused and rep.raw.startswith('{"correctness": "') and rep.raw.endswith('"}')
    values = [str(v) for v in range(1, 11)]
    q, answers, ref = ITEMS[0]
    prompt = engine.encode_chat(R3.messages(q, answers, ref))
    written = "{"
    for i, crit in enumerate(R3.names):
        written += (", " if i else "") + f'"{crit}": "'
        lps = engine.score_options(prompt + engine.encode(written), values, end_of_turn='"').logprobs
        probs = np.exp(lps) / np.exp(lps).sum()
        assert rep.scores[0][crit] == int(values[int(lps.argmax())])
        assert rep.expected[0][crit] == pytest.approx(sum((i + 1) * p for i, p in enumerate(probs)), abs=1e-6)
        assert rep.mass[0][crit] == pytest.approx(float(np.exp(lps).sum()), rel=1e-4)
        written += f'{rep.scores[0][crit]}"'
    for rep in pair.repeats:  # both answers scored in each order, mapped back to the original answers
        assert sorted(rep.scores) == [0, 1] and rep.raw.startswith('{"A": {"correctness": "')
    assert pair_position_bias([pair]).pairs == 1


# ------------------------------------------------------------------------------ over HTTP
@pytest.fixture(scope="module")
def server(engine):
    from annotune.serve import create_app, start_server

    srv = start_server(create_app(engine, model_name="tiny", token="judge-token-123"))
    yield srv
    srv.stop()


def test_http_judge_free_verdicts_are_counted_unparsed(server, monkeypatch):
    monkeypatch.setenv("ANNOTUNE_TEST_JUDGE_KEY", "judge-token-123")
    usage = server.app.state.serve.usage
    before = usage.requests
    judge = Judge("api", base_url=server.url, model="tiny", api_key_env="ANNOTUNE_TEST_JUDGE_KEY", repeats=2,
                  max_tokens=8)
    q, answers, ref = ITEMS[1]
    j = judge.judge(q, answers, ref)
    assert usage.requests - before == 2 and judge.backend.api.http_requests == 2
    body = judge.backend.body(R3.messages(q, answers, ref), seed=0)
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and "judge-token-123" not in str(body)
    for rep in j.repeats:
        assert rep.logprobs and 0 < rep.n_tokens <= 8  # log-probabilities came back over HTTP
        assert rep.error and rep.scores == {}
    assert j.unparsed == 2 and judgement_stats([j], answer=1).unparsed == 2


def test_http_judge_expected_score_from_the_served_probabilities(server, engine, monkeypatch):
    """A one-criterion rubric sent as a label-enum response_format: annotune serve answers with its
    constrained scorer, the verdict parses and the expected score is the mean over the model's own
    option probabilities."""
    monkeypatch.setenv("ANNOTUNE_TEST_JUDGE_KEY", "judge-token-123")
    judge = Judge("api", base_url=server.url, model="tiny", api_key_env="ANNOTUNE_TEST_JUDGE_KEY", rubric=R1,
                  repeats=2, structured=True)
    q, answers, ref = ITEMS[0]
    j = judge.judge(q, answers, ref)
    options = [str(v) for v in range(1, 11)]
    probs = engine.score_options(engine.encode_chat(R1.messages(q, answers, ref)), options).probs
    want = sum((i + 1) * float(p) for i, p in enumerate(probs))
    for rep in j.repeats:
        assert rep.error is None, rep.raw
        assert rep.scores[0]["correctness"] == int(options[int(probs.argmax())])
        assert rep.expected[0]["correctness"] == pytest.approx(want, abs=1e-6)
        assert rep.mass[0]["correctness"] == pytest.approx(1.0, abs=1e-6)
    assert j.scores(0, expected=True) == pytest.approx([want, want], abs=1e-6)
    st = judgement_stats([j], expected=True)
    assert st.unparsed == 0 and st.judge_sd == pytest.approx(0.0, abs=1e-9)
