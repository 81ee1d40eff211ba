"""`LocalBackend`: a transformers causal LM on this machine (see `annotune.backends.base`)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.tasks.prompts import PromptBuilder, PromptParts, constrained_questions, dimension_values, main_question
from annotune.backends.base import ANSWER_MODES, Backend, Prediction, RunStats, decide_constrained, softmax


class LocalBackend(Backend):
    """A transformers causal LM on CPU or GPU (any HF directory, GGUF file, or fine-tuned run)."""

    def __init__(self, model: str | None = None, *, dtype: str | None = "auto", device: str | None = None,
                 batch_size: int = 8, max_text_tokens: int | None = 512, max_new_tokens: int | None = None,
                 loaded=None):
        from annotune.backends.models import load_causal_lm

        if loaded is not None:  # (model, tokenizer, source) already in memory, e.g. from a test or trainer
            self.model, self.tokenizer, self.source = loaded
        else:
            self.model, self.tokenizer, self.source = load_causal_lm(model, dtype=dtype, device=device)
        self.name = self.source.name if self.source is not None else "model"
        self.batch_size = batch_size
        self.max_text_tokens = max_text_tokens
        self.max_new_tokens = max_new_tokens
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.decoder = getattr(self.model, self.model.base_model_prefix)
        self.lm_head = self.model.get_output_embeddings()

    # ------------------------------------------------------------------ tokens
    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _doc_ids(self, text: str, stats: RunStats) -> list[int]:
        ids = self._ids(text)
        if self.max_text_tokens and len(ids) > self.max_text_tokens:
            stats.truncated_docs += 1
            ids = ids[: self.max_text_tokens]
        return ids

    def _option_ids(self, options: tuple[str, ...], end_of_turn: str) -> list[list[int]]:
        """Token ids of a question's answer options. The end-of-turn marker is appended only where one
        option's tokens are a prefix of another's ("sport" / "sport news"): scoring it everywhere measured
        worse on BBC zero-shot with SmolLM2 (accuracy 0.34 vs 0.53 on 100 test articles), because a small
        model rarely ends its turn right after a bare label."""
        ids = [self._ids(o) for o in options]
        ambiguous = any(a != b and b[: len(a)] == a for a in ids for b in ids)
        if ambiguous and end_of_turn:
            ids = [self._ids(o + end_of_turn) for o in options]
        return ids

    def _stop_ids(self, parts: PromptParts) -> set[int]:
        stop = set()
        if parts.end_of_turn:
            eot = self._ids(parts.end_of_turn)
            if len(eot) == 1:
                stop.add(eot[0])
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        return stop

    # ------------------------------------------------------------------ public
    def label(self, docs, builder, answer="generate", *, progress=True):
        if answer not in ANSWER_MODES:
            raise ValueError(f"answer must be one of {ANSWER_MODES}, not {answer!r}")
        import torch
        from tqdm.auto import tqdm

        codebook = builder.codebook
        parts = builder.parts(self.tokenizer)
        stats = RunStats(docs=len(docs))
        started = time.perf_counter()
        prefix_ids = self._ids(parts.prefix)
        if getattr(self.tokenizer, "chat_template", None) is None and self.tokenizer.bos_token_id is not None:
            prefix_ids = [self.tokenizer.bos_token_id] + prefix_ids
        between_ids = self._ids(parts.between)
        doc_ids = [self._doc_ids(d.text, stats) + between_ids for d in docs]
        order = sorted(range(len(docs)), key=lambda i: -len(doc_ids[i]))
        results: list[Prediction | None] = [None] * len(docs)
        bar = tqdm(total=len(docs), desc=f"{self.name} {answer}", unit="doc", disable=not progress, leave=False)
        with torch.inference_mode():
            prefix_kv = self._encode_prefix(prefix_ids)
            stats.prompt_tokens += len(prefix_ids)
            if answer == "generate":
                q_ids = self._ids(main_question(codebook) + parts.suffix)
                stop = self._stop_ids(parts)
                limit = self.max_new_tokens or {"single": 24, "multi": 64, "dimensions": 384}[codebook.kind]
                for start in range(0, len(order), self.batch_size):
                    batch = order[start: start + self.batch_size]
                    rows = [doc_ids[i] + q_ids for i in batch]
                    texts, n_gen = self._generate(prefix_kv, len(prefix_ids), rows, stop, limit)
                    stats.generated_tokens += n_gen
                    stats.prompt_tokens += sum(map(len, rows))
                    stats.prompt_tokens_nominal += sum(len(prefix_ids) + len(r) for r in rows)
                    for i, text in zip(batch, texts):
                        parsed = parse_answer(text, codebook)
                        results[i] = Prediction(docs[i].id, text, parsed.label, None, None, parsed.error)
                    bar.update(len(batch))
            else:
                questions = constrained_questions(codebook)
                q_rows = [self._ids(q.text + parts.suffix) for q in questions]
                opt_rows = [self._option_ids(q.options, parts.end_of_turn) for q in questions]
                tree_len = sum(len(q) + sum(len(o) - 1 for o in opts) for q, opts in zip(q_rows, opt_rows))
                # keep each forward at roughly the same number of tokens
                per_batch = max(1, min(self.batch_size, (self.batch_size * 640) // (640 + tree_len)))
                for start in range(0, len(order), per_batch):
                    batch = order[start: start + per_batch]
                    logps = self._score(prefix_kv, len(prefix_ids), [doc_ids[i] for i in batch], q_rows, opt_rows)
                    for i, per_question in zip(batch, logps):
                        label, conf, pdict = decide_constrained(codebook, [softmax(lp) for lp in per_question])
                        raw = answer_text(label, codebook)
                        results[i] = Prediction(docs[i].id, raw, label, conf, pdict)
                    n_q = sum(map(len, q_rows))
                    stats.prompt_tokens += sum(len(doc_ids[i]) for i in batch) + tree_len * len(batch)
                    stats.prompt_tokens_nominal += sum(len(prefix_ids) + len(doc_ids[i]) + n_q for i in batch)
                    bar.update(len(batch))
        bar.close()
        stats.seconds = time.perf_counter() - started
        return results, stats

    # ------------------------------------------------------------------ engine
    def _encode_prefix(self, prefix_ids: list[int]):
        import torch
        from transformers import DynamicCache

        if not prefix_ids:
            return None
        cache = DynamicCache(config=self.model.config)
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

        n_rows = len(rows)
        width = max(len(r) for r in rows)
        ids = np.full((n_rows, width), self.tokenizer.pad_token_id, dtype=np.int64)
        pos = np.zeros((n_rows, width), dtype=np.int64)
        allowed = np.zeros((n_rows, width, prefix_len + width), dtype=bool)
        allowed[:, :, :prefix_len] = True
        for r, (toks, par) in enumerate(zip(rows, parents)):
            ids[r, : len(toks)] = toks
            anc = allowed[r, :, prefix_len:]
            depth = pos[r]
            for i, p in enumerate(par):
                if p >= 0:
                    anc[i] = anc[p]
                    depth[i] = depth[p] + 1
                anc[i, i] = True
            for i in range(len(toks), width):  # padding sees only itself
                anc[i, i] = True
        pos += prefix_len
        mask = torch.zeros((n_rows, 1, width, prefix_len + width), dtype=self.dtype, device=self.device)
        mask.masked_fill_(~torch.from_numpy(allowed).to(self.device).unsqueeze(1), torch.finfo(self.dtype).min)
        if prefix_kv is not None:
            cache = DynamicCache(ddp_cache_data=[(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1))
                                                 for k, v in prefix_kv])
        else:
            cache = DynamicCache(config=self.model.config)
        out = self.decoder(input_ids=torch.from_numpy(ids).to(self.device), attention_mask=mask,
                           position_ids=torch.from_numpy(pos).to(self.device), past_key_values=cache,
                           use_cache=True)
        return (out.last_hidden_state, cache) if keep_cache else out.last_hidden_state

    def _score(self, prefix_kv, prefix_len, doc_rows, q_rows, opt_rows) -> list[list[np.ndarray]]:
        """Summed log-probabilities of each question's options, for each document: [doc][question]."""
        import torch

        rows, parents, targets = [], [], []  # targets: (row, position, token, question, option)
        for r, doc in enumerate(doc_rows):
            toks = list(doc)
            par = list(range(-1, len(doc) - 1))
            for qi, (q, opts) in enumerate(zip(q_rows, opt_rows)):
                q_start = len(toks)
                toks += q
                # each question hangs off the document's last token, not off the previous question's tree
                par += [len(doc) - 1 if j == 0 else q_start + j - 1 for j in range(len(q))]
                q_last = len(toks) - 1
                for oi, opt in enumerate(opts):
                    prev = q_last
                    for j, tok in enumerate(opt):
                        targets.append((r, prev, tok, qi, oi))
                        if j < len(opt) - 1:  # the last option token is scored but needs no position
                            toks.append(tok)
                            par.append(prev)
                            prev = len(toks) - 1
            rows.append(toks)
            parents.append(par)
        hidden = self._forward_tree(prefix_kv, prefix_len, rows, parents)
        t = np.array([(a, b, c) for a, b, c, _, _ in targets], dtype=np.int64)
        flat = t[:, 0] * hidden.shape[1] + t[:, 1]
        uniq, inverse = np.unique(flat, return_inverse=True)
        h = hidden.reshape(-1, hidden.shape[-1])[torch.from_numpy(uniq).to(self.device)]
        logp = torch.log_softmax(self.lm_head(h).float(), dim=-1)
        tok_lp = logp[torch.from_numpy(inverse).to(self.device), torch.from_numpy(t[:, 2]).to(self.device)]
        tok_lp = tok_lp.cpu().numpy()
        sums = [[np.zeros(len(opts)) for opts in opt_rows] for _ in doc_rows]
        for (r, _, _, qi, oi), lp in zip(targets, tok_lp):
            sums[r][qi][oi] += lp
        return sums

    def _generate(self, prefix_kv, prefix_len, rows, stop: set[int], limit: int) -> tuple[list[str], int]:
        """Greedy decoding of right-padded rows after the shared prefix; returns texts and token count."""
        import torch

        n = len(rows)
        lengths = [len(r) for r in rows]
        hidden, cache = self._forward_tree(prefix_kv, prefix_len, rows,
                                           [list(range(-1, len(r) - 1)) for r in rows], keep_cache=True)
        width = hidden.shape[1]
        valid = torch.zeros((n, prefix_len + width), dtype=torch.bool, device=self.device)
        valid[:, :prefix_len] = True
        for r, ln in enumerate(lengths):
            valid[r, prefix_len: prefix_len + ln] = True
        last = hidden[torch.arange(n), torch.tensor(lengths) - 1]
        out_tokens: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        generated = 0
        for step in range(limit):
            next_tok = self.lm_head(last).argmax(-1).tolist()
            for r, tok in enumerate(next_tok):
                if not done[r]:
                    if tok in stop:
                        done[r] = True
                    else:
                        out_tokens[r].append(tok)
                        generated += 1
            if all(done) or step == limit - 1:
                break
            valid = torch.cat([valid, torch.ones((n, 1), dtype=torch.bool, device=self.device)], dim=1)
            mask = torch.zeros((n, 1, 1, valid.shape[1]), dtype=self.dtype, device=self.device)
            mask.masked_fill_(~valid[:, None, None, :], torch.finfo(self.dtype).min)
            pos = torch.tensor([[prefix_len + ln + step] for ln in lengths], device=self.device)
            ids = torch.tensor([[t] for t in next_tok], device=self.device)
            out = self.decoder(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                               use_cache=True)
            last = out.last_hidden_state[:, -1]
        texts = [self.tokenizer.decode(t, skip_special_tokens=False) for t in out_tokens]
        return texts, generated

