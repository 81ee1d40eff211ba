"""A persistent cache of API responses (SQLite, WAL), so that a rerun costs nothing and an interrupted
run resumes where it stopped.

A response is keyed by the SHA-256 of the endpoint, the request body (model, messages and decoding
parameters) and nothing else: never the API key, which is sent as a header and never reaches this
module. Every finished response is committed at once, so a run killed mid-way keeps all answers it
has received. Only well-formed responses are stored; failures are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    cost_usd REAL,
    seconds REAL,
    created TEXT NOT NULL
)
"""


_KEY_ADVICE = ": keep the key in an environment variable named by api_key_env"
_SECRET_PARAM = re.compile(r"key|token|secret|password|passwd|sig|auth|^code$", re.IGNORECASE)


def credentials_in(base_url: str) -> str | None:
    """Why ``base_url`` would carry a secret into configs, manifests and reports (``user:password@`` or a query
    parameter such as ``?api_key=``) and where the key belongs, naming no value; None when it carries none."""
    parts = urlsplit(base_url.strip())
    if parts.username or parts.password:
        return f"base_url must not hold credentials (user:password@){_KEY_ADVICE}"
    named = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_PARAM.search(name)]
    if named:
        return f"base_url must not hold a secret in its query ({', '.join(sorted(set(named)))}=…){_KEY_ADVICE}"
    return None


def endpoint_id(base_url: str) -> str:
    """The endpoint as stored and hashed: scheme, host, port and path, without credentials or query."""
    parts = urlsplit(base_url.strip())
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), host.lower(), parts.path.rstrip("/"), "", ""))


def request_key(base_url: str, body: dict) -> str:
    """SHA-256 of the endpoint and the request body (model, messages, decoding parameters)."""
    blob = json.dumps({"endpoint": endpoint_id(base_url), "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CachedResponse:
    response: dict
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None
    seconds: float | None


class ResponseCache:
    """Thread-safe SQLite store of API responses."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, prompt_tokens, completion_tokens, cached_tokens, cost_usd, seconds "
                "FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return CachedResponse(json.loads(row[0]), row[1] or 0, row[2] or 0, row[3] or 0, row[4], row[5])

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def put(self, key: str, base_url: str, body: dict, response: dict, *, prompt_tokens: int,
            completion_tokens: int, cached_tokens: int = 0, cost_usd: float | None = None,
            seconds: float | None = None) -> None:
        row = (key, endpoint_id(base_url), str(body.get("model", "")), json.dumps(body, ensure_ascii=False),
               json.dumps(response, ensure_ascii=False), prompt_tokens, completion_tokens, cached_tokens, cost_usd,
               seconds, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
