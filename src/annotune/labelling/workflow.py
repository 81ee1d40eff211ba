"""`Project`: the hybrid workflow's verbs over one project folder (the CLI's ``init``, ``import``, ``propose``,
``train``, ``label``, ``route``, ``export``, ``status`` call these).

    from annotune.labelling import Project
    project = Project.init("tweets", codebook="examples/flourishing.toml")
    project.import_file("../shared/data/flourishing/tweets.jsonl", labels=False)
    project.import_file("../shared/data/flourishing/ai_crowd_codings.csv", kind="reviews")
    project.label(system="head")       # trains on the human-verified labels, labels every document
    project.route(precision=0.9)       # what a reviewer should still look at
    project.export("labels.csv")

Every step is a run in the store; ``propose`` and ``label`` commit every batch and pick up where they stopped
when run again (a killed job loses at most one batch and labels nothing twice).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

from annotune.codebook import Codebook
from annotune.data.dataset import Dataset, Doc
from annotune.errors import ConfigError
from annotune.experiments.fingerprints import fingerprint
from annotune.labelling.project import (ProjectConfig, build_system, load_project_config, run_context,
                                        write_project)
from annotune.labelling.schema import store_url
from annotune.labelling.store import LabelStore
from annotune.systems.base import System, SystemConfig
from annotune.tasks.labels import label_from_json, label_to_json

ENGINES = ("local", "ray")


class Project:
    """A labelling project folder and its open store."""

    def __init__(self, cfg: ProjectConfig, *, store: str | None = None, progress: bool = False,
                 log: Callable[[str], None] = lambda m: None):
        self.cfg, self.progress, self.log = cfg, progress, log
        self.store = LabelStore(store_url(store or cfg.store, cfg.folder), cfg.codebook)
        self.context = run_context(cfg, progress=progress, log=log)

    @classmethod
    def open(cls, folder: str | Path, **kwargs: Any) -> "Project":
        return cls(load_project_config(folder), **kwargs)

    @classmethod
    def init(cls, folder: str | Path, codebook: str | Path | Codebook, *, store: str | None = None,
             name: str | None = None, **kwargs: Any) -> "Project":
        """Create a project folder (project file, codebook copy, empty store)."""
        book = codebook if isinstance(codebook, Codebook) else Codebook.load(codebook)
        write_project(Path(folder), book, store=store, name=name)
        return cls.open(folder, **kwargs)

    @property
    def codebook(self) -> Codebook:
        return self.cfg.codebook

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ import
    def import_file(self, path: str | Path, *, kind: str = "documents", **options: Any) -> dict:
        """Import ``documents`` (a data file), ``reviews`` (proposals with reviews, a long table),
        ``label-studio`` or ``argilla`` (their JSON exports)."""
        from annotune.labelling import importing, interchange

        path = Path(path)
        if not path.is_file():
            raise ConfigError("file not found", file=path)
        if kind == "documents":
            return importing.import_documents(self.store, path, **options).as_dict()
        if kind == "reviews":
            return importing.import_reviews(self.store, path, **options).as_dict()
        if kind in interchange.FORMATS:
            return interchange.import_tasks(self.store, path, kind, **options).as_dict()
        raise ConfigError(f"unknown import kind {kind!r} (documents, reviews, {', '.join(interchange.FORMATS)})")

    # ------------------------------------------------------------------ training data
    def human_dataset(self) -> tuple[Dataset, Dataset | None]:
        """(training, holdout): the human-labelled documents, a seeded stratified ``[label] holdout`` share of
        them kept out of training (what `route` measures precision on)."""
        rows = self.store.human_labelled()
        docs = [Doc(r["id"], r["text"], label_from_json(r["label"], self.codebook)) for r in rows]
        data = Dataset(docs, self.codebook, source=self.store.display_url)
        share = self.cfg.label.holdout
        n_hold = int(round(len(docs) * share))
        if share == 0 or n_hold < 2 or len(docs) - n_hold < 2:
            return data, None
        return data.split(test_size=n_hold, seed=self.cfg.seed)

    def _system(self, name: str | SystemConfig | None, role: str = "label"
                ) -> tuple[System, dict, Dataset, Dataset | None]:
        """(system, identity, its training documents, holdout), checked before any work starts."""
        config = name if isinstance(name, SystemConfig) else self.cfg.system(name, role=role)
        system = build_system(config, self.context)
        index = self.cfg.systems.index(config) + 1 if config in self.cfg.systems else 0
        identity = system.preflight(index)
        train, holdout = self.human_dataset()
        if system.trains:
            if not len(train):
                raise ConfigError(f"system {config.name!r} learns from human-verified labels and there are none yet: "
                                  "import labelled documents or reviews, or review proposals first",
                                  file=self.cfg.source, field=f"systems[{index}]")
            train = system.training_data(train)
        return system, identity, train, holdout

    def _run_key(self, system: System, identity: Any, train: Dataset) -> str:
        return fingerprint(system.fingerprint(identity), [d.id for d in train.docs] if system.trains else None,
                           self.codebook.to_dict())

    def _proposal_rows(self, system: System, identity: Any, preds) -> list[dict]:
        model_fp = fingerprint(identity)
        prompt = fingerprint(self.codebook.to_dict(), system.config.settings())
        return [{"doc_id": p.id, "system": system.name, "label": label_to_json(p.label, self.codebook), "raw": p.raw,
                 "probability": p.confidence, "probs": p.probs, "model_fingerprint": model_fp, "prompt_hash": prompt}
                for p in preds]

    # ------------------------------------------------------------------ propose, train, label
    def propose(self, systems: list[str] | None = None, *, sample: int | None = None,
                config: str | Path | None = None) -> dict:
        """The AI crowd: each system proposes labels for a seeded sample of documents no human has decided and
        it has not proposed for yet; the sample goes to the review queue. ``config``: take the systems from a
        comparison config (same codebook) instead of the project file. An interrupted run resumes its sample."""
        configs = self._proposers(systems, config)
        size = sample or self.cfg.propose.sample
        finals = self.store.final_labels()
        undecided = sorted(i for i in self.store.document_ids()
                           if finals.get(i, {}).get("provenance", "model") in ("model", "conflict"))
        out = {}
        for spec in configs:
            system, identity, train, _ = self._system(spec, role="propose")
            key = self._run_key(system, identity, train)
            run_id, resumed = self.store.start_run("propose", system=spec.name, fingerprint=key, resume="unfinished")
            drawn = json.loads(self.store.runs_by_id([run_id])[0]["settings"] or "{}").get("sample")
            if resumed and drawn is not None:  # the sample drawn when the run started
                chosen = drawn
            else:  # a new run, or one stopped before its sample was saved
                seen = self.store.proposed_by(spec.name, key)
                pool = [i for i in undecided if i not in seen]
                chosen = sorted(random.Random(f"{self.cfg.seed}:{run_id}").sample(pool, min(size, len(pool))))
                self.store.set_run_settings(run_id, {"sample": chosen, "spec": system.config.settings()})
            done = self.store.proposal_ids_done(run_id)
            todo = [i for i in chosen if i not in done]
            added = self._label_docs(system, identity, train, todo, run_id, final=False)
            self.store.enqueue([(i, f"proposed by {spec.name}", 0.0) for i in chosen], run_id)
            self.store.finish_run(run_id)
            out[spec.name] = {"run": run_id, "proposed": added, "resumed": resumed}
        return out

    def _proposers(self, names: list[str] | None, config: str | Path | None) -> list[SystemConfig]:
        if config is None:
            names = names or self.cfg.propose.systems or [s.name for s in self.cfg.systems
                                                           if s.name != (self.cfg.label.system or "")]
            return [self.cfg.system(n, role="propose") for n in names]
        from annotune.experiments.config import load_config

        other = load_config(config)
        if other.codebook.kind != self.codebook.kind or other.codebook.label_names != self.codebook.label_names:
            raise ConfigError("this comparison config's codebook has other labels than the project's", file=config,
                              field="codebook")
        chosen = [s for s in other.systems if not names or s.name in names]
        missing = set(names or []) - {s.name for s in chosen}
        if missing or not chosen:
            raise ConfigError(f"no system named {', '.join(map(repr, sorted(missing))) or 'at all'}", file=config,
                              field="systems")
        return chosen

    def train(self, system: str | None = None) -> dict:
        """Fine-tune a system on the human-verified labels (minus the holdout); returns its run folder."""
        target, identity, train, holdout = self._system(system)
        if not hasattr(target, "train"):
            return {"system": target.name, "run": None, "note": f"a {target.type!r} system trains inside `label` "
                    "(in seconds); nothing to fine-tune ahead"}
        run_id, _ = self.store.start_run("train", system=target.name, fingerprint=self._run_key(target, identity, train),
                                         settings={"spec": target.config.settings(), "train_docs": len(train)})
        folder = target.train(train)
        self.store.finish_run(run_id, len(train))
        return {"system": target.name, "run": str(folder), "train_docs": len(train),
                "holdout_docs": len(holdout) if holdout else 0}

    def label(self, system: str | None = None, *, engine: str = "local", limit: int | None = None,
              batch_size: int | None = None, ray_address: str | None = None, workers: int = 1) -> dict:
        """Label every document (or ``limit`` more) with a system trained on the human-verified labels;
        resumable, one transaction per batch."""
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r} (local or ray)", field="engine")
        target, identity, train, holdout = self._system(system)
        key = self._run_key(target, identity, train)
        # the newest label run gives the final model labels: continue it only if it is this system's (an older
        # run of this system, from before another system labelled the corpus, would leave the other's labels)
        runs = self.store.runs("label")
        latest = (runs[-1]["system"], runs[-1]["fingerprint"]) if runs else None
        run_id, resumed = self.store.start_run(
            "label", system=target.name, fingerprint=key, resume=latest == (target.name, key),
            settings={"spec": target.config.settings(), "train_docs": len(train),
                      "holdout": [d.id for d in holdout.docs] if holdout else []})
        if hasattr(target, "train") and target.trains:
            target.train(train)  # once, before any batch (workers load the trained run folder)
        done = self.store.proposal_ids_done(run_id)
        # the held-out human labels first (`route --precision` measures on them), then what no human decided,
        # then the training documents
        held = {d.id for d in holdout.docs} if holdout else set()
        trained = {d.id for d in train.docs}
        todo = sorted((d["id"] for d in self.store.documents() if d["id"] not in done),
                      key=lambda i: 0 if i in held else 2 if i in trained else 1)
        if limit is not None:
            todo = todo[:limit]
        self.log(f"{target.name}: labelling {len(todo):,} documents ({len(done):,} already labelled by run {run_id})")
        added = self._label_docs(target, identity, train, todo, run_id, final=True, engine=engine,
                                 batch_size=batch_size, ray_address=ray_address, workers=workers)
        self.store.finish_run(run_id)
        return {"system": target.name, "run": run_id, "resumed": resumed, "labelled": added,
                "already": len(done), "train_docs": len(train)}

    def _label_docs(self, system: System, identity: Any, train: Dataset, ids: list[str], run_id: int, *,
                    final: bool, engine: str = "local", batch_size: int | None = None,
                    ray_address: str | None = None, workers: int = 1) -> int:
        from annotune.labelling.engines import label_batches

        from tqdm.auto import tqdm

        size = batch_size or self.cfg.label.batch_size
        added = 0
        with tqdm(total=len(ids), desc=f"{system.name}", unit="doc", disable=not self.progress) as bar:
            for preds in label_batches(self, system, train, ids, size, engine=engine, ray_address=ray_address,
                                       workers=workers):
                added += self.store.add_proposals(self._proposal_rows(system, identity, preds), run_id=run_id,
                                                  final=final)
                bar.update(len(preds))
        return added

    # ------------------------------------------------------------------ route, export, status
    def route(self, *, threshold: float | None = None, precision: float | None = None,
              disagreement: bool = True) -> dict:
        from annotune.labelling.routing import route

        return route(self, threshold=threshold, precision=precision, disagreement=disagreement)

    def export(self, path: str | Path, *, fmt: str | None = None) -> dict:
        from annotune.labelling.interchange import export

        return export(self.store, Path(path), fmt)

    def status(self) -> dict:
        from annotune.labelling.status import status

        return status(self.store)


__all__ = ["Project", "ENGINES"]
