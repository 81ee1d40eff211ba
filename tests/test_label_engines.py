"""`annotune label` in this process and on Ray Data: the same labels, and a job killed with SIGKILL in the
middle of labelling loses nothing and labels nothing twice when it is run again.

The kill tests run the real command in a subprocess (its own session, so that the Ray processes it starts
can be killed with it), poll the SQLite store until some but not all documents are labelled, kill, rerun to
completion and check the store. Ray tests are skipped when ``ray`` is not installed (``annotune[ray]``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotune.errors import ConfigError
from annotune.labelling import Project

from conftest import TOPIC_LABELS, TOPIC_WORDS, TOPICS_CODEBOOK

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own settings
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'annotune[ray]')")
posix = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
HUMAN = 30  # human-labelled documents (the training data) in every project here
SYSTEMS = '[[systems]]\nname = "tfidf"\ntype = "tfidf"\n\n[label]\nsystem = "tfidf"\nholdout = 0.1\n'


def make_project(folder: Path, pool: int) -> Path:
    """A topics project: HUMAN human-labelled documents and ``pool`` unlabelled ones, labelled by tf-idf."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    data = folder.parent / f"{folder.name}-data"
    data.mkdir()
    (data / "codebook.toml").write_text(TOPICS_CODEBOOK, encoding="utf-8")

    def text(label: str) -> str:
        words = TOPIC_WORDS[label].split() + TOPIC_WORDS["politics"].split()  # some overlap: probabilities vary
        return " ".join(rng.choice(words) for _ in range(6))

    with (data / "labelled.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(HUMAN):
            label = TOPIC_LABELS[i % len(TOPIC_LABELS)]
            fh.write(json.dumps({"id": f"h{i:03d}", "text": text(label), "label": label}) + "\n")
    with (data / "pool.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(pool):
            fh.write(json.dumps({"id": f"p{i:05d}", "text": text(TOPIC_LABELS[i % len(TOPIC_LABELS)])}) + "\n")
    project = Project.init(folder, data / "codebook.toml")
    project.import_file(data / "labelled.jsonl")
    project.import_file(data / "pool.jsonl")
    project.close()
    path = folder / "annotune-project.toml"
    path.write_text(path.read_text(encoding="utf-8").split("[[systems]]")[0] + SYSTEMS, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the in-process tests of this module (Ray takes seconds to start)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    yield ray
    ray.shutdown()


def query(folder: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(folder / "labels.db", timeout=30) as db:
        return db.execute(sql).fetchall()


LABEL_RUN = "SELECT {} FROM proposals p JOIN runs r ON r.id = p.run_id WHERE r.kind = 'label'"


def proposals(folder: Path) -> list[tuple]:
    return query(folder, LABEL_RUN.format("p.doc_id, p.label, p.raw, p.probability, p.probs") + " ORDER BY p.id")


def test_ray_engine_needs_ray(tmp_path, monkeypatch):
    from annotune.labelling import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'annotune\[ray\]'"):
        ray_engine.import_ray()


@pytest.mark.parametrize("kind, label", [("single", "sport"), ("single", None), ("multi", ("business", "sport")),
                                         ("dimensions", {"happiness": "high", "expressing gratitude": "low"})])
def test_predictions_cross_from_actors_to_the_driver_unchanged(kind, label):
    import numpy as np

    from annotune.backends.base import Prediction
    from annotune.labelling.ray_engine import decode, encode
    from conftest import make_codebook

    codebook = make_codebook(kind)
    pred = Prediction("d1", "raw answer", label, np.float64(0.75), {"x": np.float32(0.5)}, None)
    back = decode(encode(pred, codebook), codebook)
    assert back == Prediction("d1", "raw answer", label, 0.75, {"x": 0.5}, None)
    assert type(back.label) is type(label)


@needs_ray
def test_ray_and_local_give_the_same_labels(tmp_path, local_ray):
    local = make_project(tmp_path / "local", 60)
    shutil.copytree(local, tmp_path / "ray")
    outs = {}
    for engine in ("local", "ray"):
        project = Project.open(tmp_path / engine)
        outs[engine] = project.label(engine=engine, batch_size=8)
        project.close()
    assert outs["local"]["labelled"] == outs["ray"]["labelled"] == 60 + HUMAN
    assert proposals(tmp_path / "local") == proposals(tmp_path / "ray")  # labels, probabilities, order
    finals = "SELECT doc_id, label, provenance, probability FROM labels ORDER BY doc_id"
    assert query(tmp_path / "local", finals) == query(tmp_path / "ray", finals)
    assert local_ray.is_initialized()  # a Ray the caller started is left running


# ---------------------------------------------------------------------------------------------- kill -9
def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (Linux /proc; Ray's workers have process groups of their own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def label_command(folder: Path, engine: str) -> list[str]:
    return [sys.executable, "-m", "annotune.cli", "label", str(folder), "--batch-size", "8", "--engine", engine,
            "--quiet"]


def kill_midway(folder: Path, engine: str, total: int, timeout: float = 120) -> tuple[int, int]:
    """Start `annotune label`, SIGKILL its process group once a few batches are committed; returns the
    proposals then in the store and the killed session."""
    job = subprocess.Popen(label_command(folder, engine), start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    done, deadline = 0, time.monotonic() + timeout
    try:
        while job.poll() is None and time.monotonic() < deadline:
            try:
                done = query(folder, LABEL_RUN.format("count(*)"))[0][0]
            except sqlite3.OperationalError:  # the label run's tables are being created
                done = 0
            if done >= 24:  # three batches
                break
            time.sleep(0.005)
        assert job.poll() is None, f"the job ended before it could be killed:\n{job.stdout.read().decode()}"
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        job.stdout.close()
    done = query(folder, LABEL_RUN.format("count(*)"))[0][0]
    assert 0 < done < total, f"killed with {done} of {total} documents labelled"
    return done, job.pid


def check_complete(folder: Path, total: int) -> None:
    """Every document has exactly one proposal in the one label run; model labels for all but human ones."""
    runs = query(folder, "SELECT id, docs FROM runs WHERE kind = 'label'")
    assert len(runs) == 1, runs  # the rerun resumed the killed run
    count, distinct = query(folder, LABEL_RUN.format("count(*), count(DISTINCT p.doc_id)"))[0]
    assert count == distinct == total == runs[0][1]
    assert query(folder, LABEL_RUN.format("p.doc_id") + " GROUP BY p.doc_id HAVING count(*) > 1") == []
    missing = query(folder, "SELECT id FROM documents WHERE id NOT IN (" + LABEL_RUN.format("p.doc_id") + ")")
    assert missing == []
    provenance = dict(query(folder, "SELECT provenance, count(*) FROM labels GROUP BY provenance"))
    assert provenance == {"model": total - HUMAN, "human-labelled": HUMAN}
    assert query(folder, "SELECT count(*) FROM labels l JOIN documents d ON d.id = l.doc_id "
                         "WHERE d.id LIKE 'p%' AND l.provenance != 'model'") == [(0,)]


def rerun(folder: Path, engine: str, *options: str) -> str:
    job = subprocess.run(label_command(folder, engine) + list(options), capture_output=True, text=True,
                         timeout=300, check=False)
    assert job.returncode == 0, job.stdout + job.stderr
    return job.stdout


@posix
def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path):
    folder = make_project(tmp_path / "project", 800)
    total = 800 + HUMAN
    killed, _ = kill_midway(folder, "local", total)
    assert f"labelled {total - killed:,} documents" in rerun(folder, "local")
    check_complete(folder, total)


@posix
@needs_ray
def test_kill_9_with_ray_then_rerun_loses_and_duplicates_nothing(tmp_path, local_ray):
    """The killed job runs its own local Ray (killed with it); the rerun joins this module's Ray (--ray-address)."""
    folder = make_project(tmp_path / "project", 400)  # Ray's batches are slower: fewer documents keep a kill window
    total = 400 + HUMAN
    killed, session = kill_midway(folder, "ray", total)
    out = rerun(folder, "ray", "--ray-address", local_ray.get_runtime_context().gcs_address)
    stray = session_pids(session) if Path("/proc/self/stat").exists() else []
    for pid in stray:  # Ray's workers exit on their own when their raylet dies: none should be left
        os.kill(pid, signal.SIGKILL)
    assert f"labelled {total - killed:,} documents" in out, out
    check_complete(folder, total)
    assert stray == [], "processes of the killed job still running"
