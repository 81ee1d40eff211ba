"""Where corpus labelling runs: in this process (``local``, the default) or on Ray Data (``ray``).

Both yield one list of predictions per batch, in the order of the ids given; the caller (`Project.label`) is
the store's only writer and commits each batch in one transaction, so a killed job loses at most the batches
in flight and a rerun labels only what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from annotune.backends.base import Prediction
from annotune.data.dataset import Dataset, Doc

if TYPE_CHECKING:
    from annotune.labelling.workflow import Project
    from annotune.systems.base import System


def batches(ids: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def as_dataset(rows: list[dict], codebook) -> Dataset:
    return Dataset([Doc(r["id"], r["text"], None) for r in rows], codebook)


def label_batches(project: "Project", system: "System", train: Dataset, ids: list[str], size: int, *,
                  engine: str = "local", ray_address: str | None = None, workers: int = 1
                  ) -> Iterator[list[Prediction]]:
    """The predictions of ``system`` (trained on ``train``) for the documents ``ids``, batch by batch."""
    if not ids:
        return
    if engine == "ray":
        from annotune.labelling.ray_engine import ray_batches

        yield from ray_batches(project, system, train, ids, size, address=ray_address, workers=workers)
        return
    label = system.predictor(train)
    for part in batches(ids, size):
        yield label(as_dataset(project.store.documents(part), project.codebook))


__all__ = ["label_batches", "batches", "as_dataset"]
