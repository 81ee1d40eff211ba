"""`annotune label --engine ray`: corpus labelling on Ray Data (``pip install 'annotune[ray]'``).

The documents (id, text) become a Ray dataset; ``map_batches`` sends batches to a pool of ``workers`` actors,
each of which builds the system once from the project folder (``annotune-project.toml``, reloaded in the actor)
and fits it once (`System.predictor`) on the training documents, passed as plain data. The driver iterates the
results in the order of the ids and yields one list of `Prediction` per batch; it stays the store's only
writer (`Project.label` commits each batch), so a killed job loses at most the batches in flight.

Without ``address`` a local Ray is started (and stopped at the end) unless one is already running in this
process; with ``address`` (``ray://host:10001``, ``host:6379`` or ``auto``) the job joins that cluster, whose
workers must see the project folder and its ``runs/`` at the same path (a shared file system): systems that
train (``head``, ``finetuned``) are trained by the driver before any actor starts and loaded by the actors.
Actors work in the driver's working directory (relative paths resolve as the driver's do); a local Ray started
here shares its CPUs out between the actors (``workers = 1``: all of them for the one model), else one each.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from annotune.backends.base import Prediction
from annotune.data.dataset import Dataset, Doc
from annotune.errors import ConfigError
from annotune.tasks.labels import label_from_json, label_to_json

if TYPE_CHECKING:
    from annotune.labelling.workflow import Project
    from annotune.systems.base import System

MAX_BLOCKS = 4096  # input blocks of one batch each, up to this many


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("the ray engine needs Ray Data, which is not installed: pip install 'annotune[ray]'",
                          field="engine") from None
    return ray


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays in probabilities."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def encode(pred: Prediction, codebook) -> str:
    return json.dumps({"id": pred.id, "raw": pred.raw, "label": label_to_json(pred.label, codebook),
                       "confidence": pred.confidence, "probs": pred.probs, "error": pred.error},
                      ensure_ascii=False, default=_plain)


def decode(text: str, codebook) -> Prediction:
    d = json.loads(text)
    return Prediction(d["id"], d["raw"], label_from_json(d["label"], codebook), d["confidence"], d["probs"],
                      d["error"])


class Labeller:
    """The Ray Data actor: one fitted system, batch after batch of documents in, encoded predictions out."""

    def __init__(self, project_file: str, cwd: str, system: str, settings: str, train: list[dict]):
        from annotune.environment import quiet_libraries
        from annotune.labelling.project import build_system, load_project_config, run_context

        quiet_libraries()
        if os.path.isdir(cwd):  # relative paths (project, models, run folders) as the driver has them
            os.chdir(cwd)
        cfg = load_project_config(project_file)
        self.codebook = cfg.codebook
        target = build_system(cfg.system(system), run_context(cfg, progress=False, log=lambda m: None))
        if json.dumps(target.config.settings(), sort_keys=True, default=str) != settings:
            raise ConfigError(f"system {system!r} changed in the project file while labelling: run it again",
                              file=cfg.source)
        docs = Dataset([Doc(d["id"], d["text"], label_from_json(d["label"], self.codebook)) for d in train],
                       self.codebook)
        self.label = target.predictor(docs)

    def __call__(self, batch: dict) -> dict:
        docs = Dataset([Doc(str(i), str(t), None) for i, t in zip(batch["id"], batch["text"])], self.codebook)
        preds = self.label(docs) if len(docs) else []
        return {"prediction": [encode(p, self.codebook) for p in preds]}


def start(ray, address: str | None, workers: int) -> bool:
    """Connect to Ray (quietly); True when this call started it (and should stop it)."""
    for name in ("ray", "ray.data", "ray.data._internal.progress"):  # notices and warnings about Ray itself
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    else:
        ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    return True


def ray_batches(project: "Project", system: "System", train: Dataset, ids: list[str], size: int, *,
                address: str | None = None, workers: int = 1) -> Iterator[list[Prediction]]:
    """The predictions of ``system`` for the documents ``ids``, ``size`` at a time, in the order of ``ids``,
    computed by ``workers`` Ray actors (see the module docstring)."""
    ray = import_ray()
    if not ids:
        return
    codebook = project.codebook
    rows = project.store.documents(ids)
    training = [{"id": d.id, "text": d.text, "label": label_to_json(d.label, codebook)} for d in train.docs]
    settings = json.dumps(system.config.settings(), sort_keys=True, default=str)
    started = start(ray, address, workers)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        blocks = max(1, min(MAX_BLOCKS, math.ceil(len(rows) / size)))
        try:
            data = ray.data.from_items(rows, override_num_blocks=blocks)
        except TypeError:  # Ray < 2.10
            data = ray.data.from_items(rows, parallelism=blocks)
        # a local Ray of our own: its CPUs shared out between the actors (their torch threads); else one each
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers) if started and not address else 1
        actor = {"project_file": str(project.cfg.source), "cwd": os.getcwd(), "system": system.name,
                 "settings": settings, "train": training}
        labelled = data.map_batches(Labeller, batch_size=size, compute=ray.data.ActorPoolStrategy(size=workers),
                                    num_cpus=cpus, batch_format="numpy", fn_constructor_kwargs=actor)
        seen: set[str] = set()
        batch: list[Prediction] = []
        for row in labelled.iter_rows():
            pred = decode(row["prediction"], codebook)
            if pred.id in seen:
                continue  # cannot happen with Ray Data's exactly-once output; never commit an id twice
            seen.add(pred.id)
            batch.append(pred)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch
        missing = len({r["id"] for r in rows} - seen)
        if missing:
            raise RuntimeError(f"Ray returned no prediction for {missing} documents: run `annotune label` again")
    finally:
        if started:
            ray.shutdown()


__all__ = ["Labeller", "import_ray", "ray_batches"]
