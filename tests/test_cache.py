"""`annotune.backends.api.cache`: the SQLite response cache across reopenings of the same file, the request
key (stable, sensitive to what changes an answer), and endpoints stored and hashed without credentials."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from annotune.backends.api.cache import (
    CachedResponse,
    ResponseCache,
    endpoint_id,
    request_key,
)

URL = "https://api.example.com/v1"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Which topic? Text: shares fell"}],
        "temperature": 0, "max_tokens": 8, "logprobs": True, "top_logprobs": 5}
RESPONSE = {"id": "chatcmpl-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "business"}}],
            "usage": {"prompt_tokens": 31, "completion_tokens": 1}}


def put(cache: ResponseCache, body: dict = BODY, response: dict = RESPONSE, url: str = URL, **kw) -> str:
    key = request_key(url, body)
    cache.put(key, url, body, response, **{"prompt_tokens": 31, "completion_tokens": 1, **kw})
    return key


# ---------------------------------------------------------------------------- the store
def test_put_get_contains_len_across_a_reopen(tmp_path):
    path = tmp_path / "nested" / "api-cache.sqlite"  # the folder is created
    with ResponseCache(path) as cache:
        assert len(cache) == 0
        key = put(cache, cached_tokens=16, cost_usd=0.0123, seconds=0.4)
        assert key in cache and "0" * 64 not in cache
        assert cache.get("0" * 64) is None
        assert len(cache) == 1
    assert path.is_file()

    with ResponseCache(path) as cache:  # a new process would see the same
        assert len(cache) == 1 and key in cache
        assert cache.get(key) == CachedResponse(RESPONSE, 31, 1, 16, 0.0123, 0.4)
        other = put(cache, {**BODY, "max_tokens": 9})
        assert other != key and len(cache) == 2

    with ResponseCache(path) as cache:
        assert {k for k in (key, other) if k in cache} == {key, other}


def test_defaults_and_unicode_round_trip(tmp_path):
    body = {**BODY, "messages": [{"role": "user", "content": "Café — 東京 🚀"}]}
    response = {**RESPONSE, "choices": [{"message": {"content": "ça « marche »"}}]}
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        key = put(cache, body, response)
        got = cache.get(key)
    assert got == CachedResponse(response, 31, 1, 0, None, None)
    row = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT request, model FROM responses").fetchone()
    assert "Café — 東京 🚀" in row[0] and row[1] == "gpt-4o-mini"  # stored as readable text


def test_putting_the_same_key_again_replaces_the_row(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        key = put(cache)
        newer = {**RESPONSE, "id": "chatcmpl-2"}
        assert put(cache, response=newer, prompt_tokens=40) == key
        assert len(cache) == 1
        assert cache.get(key).response["id"] == "chatcmpl-2" and cache.get(key).prompt_tokens == 40


def test_each_answer_is_committed_at_once(tmp_path):
    """A run killed after a put keeps the answer: another connection sees it before this one closes."""
    path = tmp_path / "c.sqlite"
    writer = ResponseCache(path)
    try:
        key = put(writer)
        with ResponseCache(path) as reader:
            assert key in reader and reader.get(key).response == RESPONSE
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        writer.close()


def test_concurrent_puts_from_threads(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        def work(t: int) -> None:
            for i in range(25):
                put(cache, {**BODY, "messages": [{"role": "user", "content": f"{t}-{i}"}]})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(cache) == 100


# ---------------------------------------------------------------------------- request keys
def test_request_key_is_stable():
    key = request_key(URL, BODY)
    assert len(key) == 64 and int(key, 16) >= 0
    assert request_key(URL, dict(reversed(list(BODY.items())))) == key  # key order does not matter
    assert request_key(URL + "/", BODY) == key  # a trailing slash does not matter
    assert request_key("HTTPS://API.Example.COM/v1", BODY) == key  # nor the case of scheme and host
    assert request_key("https://user:pw@api.example.com/v1?x=1#f", BODY) == key  # nor credentials or query
    # a pinned value: a change of the hashing would silently invalidate every user's cache
    assert request_key("http://h/v1", {"model": "m"}) == \
        "a8c5dd5d56efe963cbe72f13dd9235a634fe7169b17b538c5734a5ab109c9efd"


@pytest.mark.parametrize("change", [
    {"model": "gpt-4o"},
    {"temperature": 0.7},
    {"max_tokens": 9},
    {"top_logprobs": 3},
    {"messages": [{"role": "user", "content": "Which topic? Text: shares rose"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, *BODY["messages"]]},
    {"seed": 1},
])
def test_request_key_is_sensitive_to_the_body(change):
    assert request_key(URL, {**BODY, **change}) != request_key(URL, BODY)


@pytest.mark.parametrize("url", ["http://api.example.com/v1", "https://api.example.com:8443/v1",
                                 "https://api.example.com/v2", "https://other.example.com/v1"])
def test_request_key_is_sensitive_to_the_endpoint(url):
    assert request_key(url, BODY) != request_key(URL, BODY)


# ---------------------------------------------------------------------------- credentials
@pytest.mark.parametrize("url,expected", [
    ("http://user:secret@host/v1", "http://host/v1"),
    ("http://user:secret@host:8000/v1/", "http://host:8000/v1"),
    ("https://secret@Host.Example/v1?api_key=secret#secret", "https://host.example/v1"),
    ("  http://127.0.0.1:8000/v1  ", "http://127.0.0.1:8000/v1"),
])
def test_endpoint_id_never_contains_credentials(url, expected):
    assert endpoint_id(url) == expected
    assert "secret" not in endpoint_id(url) and "user" not in endpoint_id(url)


def test_credentials_in_the_url_never_reach_the_file(tmp_path):
    url = "http://user:s3cr3t-token@127.0.0.1:8000/v1?key=s3cr3t-token"
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        key = put(cache, url=url)
        assert key == request_key("http://127.0.0.1:8000/v1", BODY)
    endpoint = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT endpoint FROM responses").fetchone()[0]
    assert endpoint == "http://127.0.0.1:8000/v1"
    for f in tmp_path.iterdir():  # the database and any WAL/SHM files left beside it
        assert b"s3cr3t" not in f.read_bytes(), f.name
