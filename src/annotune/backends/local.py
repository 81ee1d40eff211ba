"""`LocalBackend`: a transformers causal LM on this machine (see `annotune.backends.base`).

Besides `Backend.label`, the backend is the local *engine* that `annotune serve` and other callers use
through its public methods: `encode` / `decode` / `encode_chat` (token ids as the backend prompts),
`option_ids` and `stop_ids` (the answer options and stop tokens, defined once here),
`score_options` (summed log-probabilities of each full answer option after a prompt, the constrained
scorer) and `generate` (greedy decoding with optional per-token log-probabilities).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from annotune.backends.attention import matrix_attention_without_gradients, use_fast_cpu_attention
from annotune.backends.base import ANSWER_MODES, Backend, Prediction, RunStats, decide_constrained, softmax
from annotune.backends.kv_cache import decode_batches, empty_like, gathered_cache, make_room, put_rows
from annotune.backends.prompt_tokens import (ConstrainedPrompt, document_ids, encode_chat, option_token_ids,
                                             text_ids)
from annotune.backends.token_trees import (attention_mask, branch_trees, question_tree, sliding_window,
                                           tree_layout)
from annotune.finetune.thresholds import scaled
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.tasks.prompts import main_question
from annotune.tasks.prompts import end_of_turn as template_end_of_turn


# Questions that add more tokens than this to a document's tree are scored in two stages (`_forward_branches`):
# 46 flourishing dimensions (1,225 tokens) ran 1.09-1.31x faster that way, 5 yes/no questions (114 tokens)
# 1.2-1.6x slower (SmolLM2, bf16 CPU, 2026-12-04; README, Labelling speed).
BRANCH_TREE_TOKENS = 512
# cached key positions the question rows of one forward attend to, in all (measured best of 4,096-32,768)
BRANCH_CACHE_TOKENS = 16384


@dataclass
class Generation:
    """One greedy continuation: the tokens (without the stop token), their text, why it ended
    (``"stop"``: a stop token; ``"length"``: the token limit) and, when asked for, each token's
    log-probability and the top-k ``(token id, log-probability)`` alternatives, most likely first."""

    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


@dataclass
class OptionScores:
    """The constrained scorer's answer: each option's token ids and summed log-probability."""

    options: tuple[str, ...]
    token_ids: list[list[int]]
    logprobs: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        """The options' probabilities, normalised over the options."""
        return softmax(self.logprobs)


class LocalBackend(Backend):
    """A transformers causal LM on CPU or GPU (any HF directory, GGUF file, or fine-tuned run)."""

    def __init__(self, model: str | None = None, *, dtype: str | None = "auto", device: str | None = None,
                 batch_size: int = 8, max_text_tokens: int | None = 512, max_new_tokens: int | None = None,
                 decision_scale: float | None = None, loaded=None):
        """``decision_scale`` multiplies the probability of the "no"/"absent" option of every constrained
        question before deciding (multi-label and dimension tasks; `annotune.finetune.thresholds`); None:
        the scale a fine-tuned run tuned on its dev documents, 1 for any other model."""
        from annotune.backends.models import load_causal_lm
        from annotune.finetune.thresholds import run_decision_scale

        if loaded is not None:  # (model, tokenizer, source) already in memory, e.g. from a test or trainer
            self.model, self.tokenizer, self.source = loaded
        else:
            self.model, self.tokenizer, self.source = load_causal_lm(model, dtype=dtype, device=device)
        self.name = self.source.name if self.source is not None else "model"
        self.batch_size = batch_size
        self.max_text_tokens = max_text_tokens
        self.max_new_tokens = max_new_tokens
        self.decision_scale = run_decision_scale(self.source) if decision_scale is None else float(decision_scale)
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.decoder = getattr(self.model, self.model.base_model_prefix)
        self.lm_head = self.model.get_output_embeddings()
        self.window, self.layer_types = sliding_window(self.model.config)
        if self.device.type == "cpu":  # the matrix-product attention of the question rows (`_forward_branches`)
            use_fast_cpu_attention(self.model)

    # ------------------------------------------------------------------ engine: tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return text_ids(self.tokenizer, text)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, special tokens kept (``<|im_end|>`` stays visible)."""
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat rendered for answering (see the module function `encode_chat`)."""
        return encode_chat(self.tokenizer, messages)

    @property
    def context_length(self) -> int | None:
        """The model's context window in tokens, where its config states one."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def _doc_ids(self, text: str, stats: RunStats) -> list[int]:
        ids, cut = document_ids(self.tokenizer, text, self.max_text_tokens)
        stats.truncated_docs += cut
        return ids

    def option_ids(self, options: tuple[str, ...] | list[str], end_of_turn: str | None = None) -> list[list[int]]:
        """Token ids of a question's answer options (see `option_token_ids`)."""
        return option_token_ids(self.tokenizer, options, end_of_turn)

    def stop_ids(self, end_of_turn: str | None = None) -> set[int]:
        """Tokens that end an answer: the end-of-turn marker (default: the chat template's) where it is
        one token, and EOS."""
        if end_of_turn is None:
            end_of_turn = template_end_of_turn(self.tokenizer)
        stop = set()
        if end_of_turn:
            eot = self.encode(end_of_turn)
            if len(eot) == 1:
                stop.add(eot[0])
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        return stop

    # ------------------------------------------------------------------ engine: one prompt
    def score_options(self, prompt_ids: list[int], options: tuple[str, ...] | list[str], *,
                      end_of_turn: str | None = None) -> OptionScores:
        """The constrained scorer on one prompt: the summed log-probability of each option's full token
        sequence (`option_ids`) right after ``prompt_ids``, in one tree-attention forward."""
        import torch

        if not prompt_ids:
            raise ValueError("score_options needs a non-empty prompt")
        opts = tuple(options)
        opt_ids = self.option_ids(opts, end_of_turn)
        with torch.inference_mode():
            logps = self._score(None, 0, [list(prompt_ids)], [[]], [opt_ids])[0][0]
        return OptionScores(opts, opt_ids, logps)

    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids: set[int] | None = None, *,
                 top_logprobs: int | None = None) -> Generation:
        """Greedy decoding after ``prompt_ids`` until a stop token (default `stop_ids()`) or
        ``max_new_tokens``; ``top_logprobs`` (an int, 0 included) also records each token's
        log-probability and that many most likely alternatives."""
        import torch

        if not prompt_ids:
            raise ValueError("generate needs a non-empty prompt")
        stop = self.stop_ids() if stop_ids is None else set(stop_ids)
        with torch.inference_mode():
            return self._generate(None, 0, [list(prompt_ids)], stop, max_new_tokens, top_logprobs)[0]

    # ------------------------------------------------------------------ public
    def label(self, docs, builder, answer="generate", *, progress=True):
        results, stats, _ = self._label(docs, builder, answer, progress)
        return results, stats

    def option_probabilities(self, docs, builder, *, progress=False) -> list[list[np.ndarray]]:
        """Per document, the probabilities of each constrained question's options (before any decision
        scale): what `annotune.finetune.thresholds.tune_scale` tunes on."""
        return self._label(docs, builder, "constrained", progress)[2]

    def _label(self, docs, builder, answer, progress):
        if answer not in ANSWER_MODES:
            raise ValueError(f"answer must be one of {ANSWER_MODES}, not {answer!r}")
        import torch
        from tqdm.auto import tqdm

        codebook = builder.codebook
        prompt = ConstrainedPrompt.build(self.tokenizer, builder, questions=answer != "generate")
        stats = RunStats(docs=len(docs))
        started = time.perf_counter()
        prefix_ids, between_ids = prompt.prefix_ids, prompt.between_ids
        doc_ids = [self._doc_ids(d.text, stats) + between_ids for d in docs]
        order = sorted(range(len(docs)), key=lambda i: -len(doc_ids[i]))
        results: list[Prediction | None] = [None] * len(docs)
        option_probs: list[list[np.ndarray] | None] = [None] * len(docs)
        threshold_option = codebook.task.threshold_option
        bar = tqdm(total=len(docs), desc=f"{self.name} {answer}", unit="doc", disable=not progress, leave=False)
        with torch.inference_mode():
            prefix_kv = self._encode_prefix(prefix_ids)
            stats.prompt_tokens += len(prefix_ids)
            if answer == "generate":
                q_ids = self.encode(main_question(codebook) + prompt.suffix)
                stop = self.stop_ids()
                limit = self.max_new_tokens or codebook.task.max_new_tokens
                group = self.batch_size * decode_batches(self.device)
                for start in range(0, len(order), group):
                    batch = order[start: start + group]
                    rows = [doc_ids[i] + q_ids for i in batch]
                    gens = self._generate(prefix_kv, len(prefix_ids), rows, stop, limit)
                    stats.generated_tokens += sum(len(g.token_ids) for g in gens)
                    stats.prompt_tokens += sum(map(len, rows))
                    stats.prompt_tokens_nominal += sum(len(prefix_ids) + len(r) for r in rows)
                    for i, gen in zip(batch, gens):
                        parsed = parse_answer(gen.text, codebook)
                        results[i] = Prediction(docs[i].id, gen.text, parsed.label, None, None, parsed.error)
                    bar.update(len(batch))
            else:
                q_rows, opt_rows, tree_len = prompt.q_rows, prompt.opt_rows, prompt.tree_length
                branched = len(q_rows) > 1 and tree_len > BRANCH_TREE_TOKENS
                # keep each forward at roughly the same number of tokens (branched: each question its own row)
                per_batch = (self.batch_size if branched
                             else max(1, min(self.batch_size, (self.batch_size * 640) // (640 + tree_len))))
                for start in range(0, len(order), per_batch):
                    batch = order[start: start + per_batch]
                    logps = self._score(prefix_kv, len(prefix_ids), [doc_ids[i] for i in batch], q_rows, opt_rows,
                                        branched=branched)
                    for i, per_question in zip(batch, logps):
                        option_probs[i] = [softmax(lp) for lp in per_question]
                        label, conf, pdict = decide_constrained(
                            codebook, scaled(option_probs[i], threshold_option, self.decision_scale))
                        raw = answer_text(label, codebook)
                        results[i] = Prediction(docs[i].id, raw, label, conf, pdict)
                    n_q = sum(map(len, q_rows))
                    stats.prompt_tokens += sum(len(doc_ids[i]) for i in batch) + tree_len * len(batch)
                    stats.prompt_tokens_nominal += sum(len(prefix_ids) + len(doc_ids[i]) + n_q for i in batch)
                    bar.update(len(batch))
        bar.close()
        stats.seconds = time.perf_counter() - started
        return results, stats, option_probs

    # ------------------------------------------------------------------ engine: batched internals
    def _encode_prefix(self, prefix_ids: list[int]):
        import torch
        from transformers import DynamicCache

        if not prefix_ids:
            return None
        cache = DynamicCache()  # plain layers: a sliding-window layer's cache would drop the prefix's start
        ids = torch.tensor([prefix_ids], device=self.device)
        self.decoder(input_ids=ids, past_key_values=cache, use_cache=True)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _forward_tree(self, prefix_kv, prefix_len: int, rows: list[list[int]], parents: list[list[int]],
                      keep_cache: bool = False):
        """Run rows of token trees after the shared prefix.

        ``parents[r][i]`` is the index of token i's predecessor in row r (-1: it follows the prefix).
        Token i attends to the whole prefix, its ancestors and itself; its position is the prefix length
        plus its depth. Returns hidden states [R, L, H] (and the cache when ``keep_cache``).
        """
        import torch
        from transformers import DynamicCache

        ids, pos, allowed = tree_layout(rows, parents, prefix_len, self.tokenizer.pad_token_id)
        n_rows, width = ids.shape
        pos = torch.from_numpy(pos).to(self.device)
        mask = attention_mask(torch.from_numpy(allowed).to(self.device), pos, None, self.dtype, self.window,
                              self.layer_types)
        if prefix_kv is not None:
            cache = DynamicCache(ddp_cache_data=[(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1))
                                                 for k, v in prefix_kv])
        else:
            cache = DynamicCache()  # plain layers keep every token (sliding windows are in the mask)
        out = self.decoder(input_ids=torch.from_numpy(ids).to(self.device), attention_mask=mask, position_ids=pos,
                           past_key_values=cache, use_cache=True)
        return (out.last_hidden_state, cache) if keep_cache else out.last_hidden_state

    def _score(self, prefix_kv, prefix_len, doc_rows, q_rows, opt_rows, *,
               branched: bool = False) -> list[list[np.ndarray]]:
        """Summed log-probabilities of each question's options, for each document: [doc][question]; ``branched``:
        in two stages (`_forward_branches`), else one tree per document."""
        import torch

        if branched:
            hidden, targets, doc_of = self._forward_branches(prefix_kv, prefix_len, doc_rows, q_rows, opt_rows)
        else:
            rows, parents, targets = [], [], []  # targets: (row, position, token, question, option)
            for r, doc in enumerate(doc_rows):
                toks, par, tree_targets = question_tree(doc, q_rows, opt_rows)
                rows.append(toks)
                parents.append(par)
                targets += [(r, *t) for t in tree_targets]
            hidden, doc_of = [self._forward_tree(prefix_kv, prefix_len, rows, parents)], list(range(len(rows)))
        t = np.array([(a, b, c) for a, b, c, _, _ in targets], dtype=np.int64)
        width = max(x.shape[1] for x in hidden)
        flat = t[:, 0] * width + t[:, 1]
        uniq, inverse = np.unique(flat, return_inverse=True)
        hidden = torch.cat([torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[1])) for x in hidden])
        h = hidden.reshape(-1, hidden.shape[-1])[torch.from_numpy(uniq).to(self.device)]
        logp = torch.log_softmax(self.lm_head(h).float(), dim=-1)
        tok_lp = logp[torch.from_numpy(inverse).to(self.device), torch.from_numpy(t[:, 2]).to(self.device)]
        tok_lp = tok_lp.cpu().numpy()
        sums = [[np.zeros(len(opts)) for opts in opt_rows] for _ in doc_rows]
        for (r, _, _, qi, oi), lp in zip(targets, tok_lp):
            sums[doc_of[r]][qi][oi] += lp
        return sums

    def _forward_branches(self, prefix_kv, prefix_len: int, doc_rows, q_rows, opt_rows):
        """Many questions (multi-label, dimensions): the documents first, their caches kept, then each
        question's branch (`branch_trees`) as a row of its own that attends to the prefix, its document and
        its own tokens. One tree per document (`question_tree`) would attend over every other question's
        branch, masked, in each of them. Returns hidden states (chunks of [rows, L, H]), the targets
        (row, position, token, question, option), rows counted across chunks, and each row's document."""
        import torch

        lengths = [len(d) for d in doc_rows]
        _, docs_kv = self._forward_tree(prefix_kv, prefix_len, doc_rows, [list(range(-1, n - 1)) for n in lengths],
                                        keep_cache=True)
        cached = prefix_len + max(lengths)
        seen = torch.arange(cached)[None, :] < (prefix_len + torch.tensor(lengths))[:, None]  # [docs, cached]
        branches = branch_trees(q_rows, opt_rows)
        # rows of about the same length share a forward: little padding
        owners = sorted(((r, b) for r in range(len(doc_rows)) for b in range(len(branches))),
                        key=lambda rb: len(branches[rb[1]][0]))
        per_chunk = max(1, BRANCH_CACHE_TOKENS // cached)  # each row attends to its document's whole cache
        hidden, targets = [], []
        for start in range(0, len(owners), per_chunk):
            chunk = owners[start: start + per_chunk]
            for i, (_, b) in enumerate(chunk):
                targets += [(start + i, *tg) for tg in branches[b][2]]
            ids, depth, own = tree_layout([branches[b][0] for _, b in chunk], [branches[b][1] for _, b in chunk],
                                          0, self.tokenizer.pad_token_id)
            doc = torch.tensor([r for r, _ in chunk])
            pos = torch.from_numpy(depth) + (prefix_len + torch.tensor(lengths))[doc][:, None]
            allowed = torch.cat([seen[doc][:, None, :].expand(-1, ids.shape[1], -1), torch.from_numpy(own)], dim=2)
            # the cached keys sit at positions 0, 1, … (padding unseen), the rows' own keys at theirs
            mask = attention_mask(allowed.to(self.device), pos.to(self.device), None, self.dtype, self.window,
                                  self.layer_types)
            index = doc.to(self.device)
            cache = gathered_cache(docs_kv, index)
            with matrix_attention_without_gradients():  # rows of a few queries over a long cache
                hidden.append(self.decoder(input_ids=torch.from_numpy(ids).to(self.device), attention_mask=mask,
                                           position_ids=pos.to(self.device), past_key_values=cache,
                                           use_cache=True).last_hidden_state)
        return hidden, targets, [r for r, _ in owners]

    def _generate(self, prefix_kv, prefix_len, rows, stop: set[int], limit: int,
                  top_k: int | None = None) -> list[Generation]:
        """Greedy decoding of right-padded rows after the shared prefix (``top_k`` not None: record
        log-probabilities, see `generate`). The prompts are encoded ``batch_size`` rows at a time, each batch's
        cache copied into one for all rows (`kv_cache`), and the rows decoded together."""
        import torch

        lengths = [len(r) for r in rows]
        chunks = [list(range(i, min(i + self.batch_size, len(rows)))) for i in range(0, len(rows), self.batch_size)]
        merged, lasts, out = None, [], []
        for chunk in chunks:
            hidden, kv = self._forward_tree(prefix_kv, prefix_len, [rows[r] for r in chunk],
                                            [list(range(-1, lengths[r] - 1)) for r in chunk], keep_cache=True)
            last = hidden[torch.arange(len(chunk)), torch.tensor([lengths[r] for r in chunk]) - 1]
            if len(chunks) > 1 and chunk[0] == 0:
                merged = empty_like(kv, len(rows), prefix_len + max(lengths), limit)
            if merged is None:  # one batch, or layers of another kind: this batch alone
                out += self._decode(last, make_room(kv, limit), prefix_len, hidden.shape[1],
                                    [lengths[r] for r in chunk], stop, limit, top_k)
            else:
                put_rows(merged, kv, chunk[0])
                lasts.append(last)
            del hidden, kv
        if merged is None:
            return out
        return self._decode(torch.cat(lasts), merged, prefix_len, max(lengths), lengths, stop, limit, top_k)

    def _decode(self, last, cache, prefix_len: int, width: int, lengths: list[int], stop: set[int], limit: int,
                top_k: int | None) -> list[Generation]:
        """The greedy loop after the prompts: ``last`` holds each row's final hidden state, ``cache`` the prefix
        and ``width`` prompt positions of every row (row r's first ``lengths[r]`` of them real)."""
        import torch

        n = len(lengths)
        valid = torch.zeros((n, prefix_len + width), dtype=torch.bool, device=self.device)
        valid[:, :prefix_len] = True
        for r, ln in enumerate(lengths):
            valid[r, prefix_len: prefix_len + ln] = True
        key_pos = torch.arange(prefix_len + width, device=self.device).expand(n, -1) if self.window else None
        out_tokens: list[list[int]] = [[] for _ in range(n)]
        out_lps: list[list[float]] = [[] for _ in range(n)]
        out_tops: list[list[list[tuple[int, float]]]] = [[] for _ in range(n)]
        done = [False] * n
        for step in range(limit):
            logits = self.lm_head(last)
            next_tok = logits.argmax(-1).tolist()
            if top_k is not None:
                logp = torch.log_softmax(logits.float(), dim=-1)
                chosen = logp[torch.arange(n), torch.tensor(next_tok, device=self.device)].tolist()
                tops = [[] for _ in range(n)]
                if top_k:
                    vals, idx = torch.topk(logp, top_k, dim=-1)
                    tops = [list(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]
            for r, tok in enumerate(next_tok):
                if not done[r]:
                    if tok in stop:
                        done[r] = True
                    else:
                        out_tokens[r].append(tok)
                        if top_k is not None:
                            out_lps[r].append(chosen[r])
                            out_tops[r].append(tops[r])
            if all(done) or step == limit - 1:
                break
            valid = torch.cat([valid, torch.ones((n, 1), dtype=torch.bool, device=self.device)], dim=1)
            pos = torch.tensor([[prefix_len + ln + step] for ln in lengths], device=self.device)
            key_pos = torch.cat([key_pos, pos], dim=1) if self.window else None
            mask = attention_mask(valid[:, None, :], pos, key_pos, self.dtype, self.window, self.layer_types)
            ids = torch.tensor([[t] for t in next_tok], device=self.device)
            out = self.decoder(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                               use_cache=True)
            last = out.last_hidden_state[:, -1]
        return [Generation(toks, self.decode(toks), "stop" if done[r] else "length",
                           out_lps[r] if top_k is not None else None, out_tops[r] if top_k is not None else None)
                for r, toks in enumerate(out_tokens)]
