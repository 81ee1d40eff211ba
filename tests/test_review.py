"""`annotune review`: the review page on a real server (127.0.0.1) over a real SQLite store — driven in headless
Chromium with keys and clicks, its token and CSRF checks, the CLI's refusal of remote hosts, and two reviewers
at once (different documents; concurrent reviews of one document are all kept)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from urllib.parse import urlencode

import pytest
from starlette.datastructures import FormData
from typer.testing import CliRunner

from annotune.cli import app
from annotune.labelling import Project
from annotune.labelling.resolve import resolve_reviews
from annotune.labelling.review_app import ReviewState, create_review_app, label_from_form
from annotune.serve import ServerThread

from conftest import make_codebook
from test_report import chromium_or_skip

TOKEN = "review-test-token-0123456789abcdef"
CSRF = ReviewState(None, TOKEN).csrf
COOKIE = ReviewState(None, TOKEN).cookie
BEARER = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = {
    "d1": "The striker scored twice as the team won the cup final.",
    "d2": "Shares in the chip maker fell after profits missed forecasts.",
    "d3": "The minister said the election will be held in spring.",
    "d4": "The new phone runs a faster chip and a brighter screen.",
}
SINGLE = {"d1": [("s1", "sport", 0.9), ("s2", "tech", 0.4)], "d2": [("s1", "tech", 0.7)],
          "d3": [("s1", "politics", 0.6), ("s2", None, None)], "d4": [("s1", "business", 0.5), ("s2", "tech", 0.8)]}


def make_project(folder, kind: str = "single", proposals: dict = SINGLE) -> Project:
    project = Project.init(folder / "p", make_codebook(kind))
    store = project.store
    store.add_documents([{"id": i, "text": t} for i, t in TEXTS.items()], source="t")
    for system in ("s1", "s2"):
        run_id, _ = store.start_run("propose", system=system, fingerprint="x")
        store.add_proposals([{"doc_id": d, "system": s, "label": label, "probability": prob, "raw": str(label)}
                             for d, rows in proposals.items() for s, label, prob in rows if s == system],
                            run_id=run_id)
    store.enqueue([(d, "test", float(i)) for i, d in enumerate(TEXTS)])
    return project


@pytest.fixture
def served(tmp_path):
    project = make_project(tmp_path)
    with ServerThread(create_review_app(project, TOKEN)) as srv:
        yield project, srv
    project.close()


def request(srv, method: str, path: str, form: dict | list | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        hdrs = dict(headers or {})
        body = None
        if form is not None:
            body = urlencode(form, doseq=True)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()
    finally:
        conn.close()


def proposal_id(store, doc_id: str, system: str) -> int:
    return next(p["id"] for p in store.proposals_of(doc_id) if p["system"] == system)


def active_reviews(store) -> list[tuple]:
    return [(r["doc_id"], r["decision"], r["reviewer"], r["proposal_id"], r["label"]) for r in store.reviews()]


# ------------------------------------------------------------------------------ the page in a browser
def test_review_in_headless_chromium(served):
    exe = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    project, srv = served
    store = project.store
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://{srv.host}:{srv.port}/review?token={TOKEN}&reviewer=alice")
            assert "token" not in page.url and "reviewer=alice" in page.url

            def doc() -> str | None:
                return page.get_attribute("#document", "data-doc")

            def step(action) -> None:
                with page.expect_navigation():
                    action()

            assert doc() == "d1"
            assert page.inner_text("#document .text") == TEXTS["d1"]
            rows = page.locator("li.proposal")
            assert rows.count() == 2
            assert [rows.nth(i).locator(".system").inner_text() for i in range(2)] == ["s1", "s2"]
            assert rows.nth(0).locator(".label").inner_text() == "sport"
            assert rows.nth(0).locator(".prob").inner_text() == "90%"
            assert page.get_attribute("#progress", "data-queue") == "4"

            step(lambda: page.keyboard.press("1"))  # accept s1's "sport"
            assert doc() == "d2" and "d1" in page.inner_text("#notice")
            assert page.get_attribute("#progress", "data-mine") == "1"

            page.keyboard.press("c")  # focuses the correct form
            assert page.evaluate("document.activeElement.id") == "correct-label"
            assert page.input_value("#correct-label") == "tech"  # the most probable proposal's label
            page.select_option("#correct-label", "sport")
            step(lambda: page.click("#correct-submit"))
            assert doc() == "d3"

            page.locator("body").focus()
            step(lambda: page.keyboard.press("u"))  # undo the correction: d2 again
            assert doc() == "d2" and "Undid your review of d2" in page.inner_text("#notice")
            page.select_option("#correct-label", "business")
            page.fill("#correct-form input[name=note]", "markets, not tech")
            step(lambda: page.click("#correct-submit"))

            assert doc() == "d3"
            assert page.locator("li.proposal").nth(1).locator("button").is_disabled()  # an INVALID proposal
            page.keyboard.press("2")  # nothing to accept there: still d3
            assert doc() == "d3"
            step(lambda: page.keyboard.press("r"))  # reject all

            assert doc() == "d4"
            step(lambda: page.locator("li.proposal").nth(1).locator("button").click())  # accept s2's "tech"
            assert page.locator("#empty").is_visible()
            assert page.get_attribute("#progress", "data-mine") == "4"
            assert page.get_attribute("#progress", "data-queue") == "0"
        finally:
            browser.close()
    assert not errors, errors  # no script error, no CSP violation

    assert active_reviews(store) == [
        ("d1", "accept", "alice", proposal_id(store, "d1", "s1"), None),
        ("d2", "correct", "alice", None, '"business"'),
        ("d3", "reject", "alice", None, None),
        ("d4", "accept", "alice", proposal_id(store, "d4", "s2"), None),
    ]
    every = store.reviews(active=False)
    assert len(every) == 5 and [r["label"] for r in every if r["undone_at"] is not None] == ['"sport"']
    assert all(r["source"] == "web" for r in every)
    assert store.reviews("d2")[0]["note"] == "markets, not tech"
    final = {d: (r["label"], r["provenance"], r["system"]) for d, r in store.final_labels().items()}
    assert final == {"d1": ('"sport"', "human-verified", "alice"), "d2": ('"business"', "human-corrected", "alice"),
                     "d3": (None, "human-rejected", "alice"), "d4": ('"tech"', "human-verified", "alice")}
    assert store.queue_size() == 0


# ------------------------------------------------------------------------------ auth
def test_token_is_required_and_checked(served):
    project, srv = served
    assert request(srv, "GET", "/health")[0] == 200
    assert request(srv, "GET", "/review")[0] == 401
    assert request(srv, "GET", "/review/api/next")[0] == 401
    assert request(srv, "GET", "/review?token=wrong-token")[0] == 401
    assert request(srv, "GET", "/review", headers={"Cookie": f"{COOKIE}=wrong-token"})[0] == 401
    assert request(srv, "GET", "/review", headers={"Cookie": f"annotune_review_other={TOKEN}"})[0] == 401
    assert request(srv, "GET", "/review", headers={"Authorization": "Bearer wrong-token"})[0] == 401
    assert request(srv, "POST", "/review/decide", form={"csrf": CSRF, "doc_id": "d1", "decision": "reject"})[0] == 401

    status, headers, _ = request(srv, "GET", f"/review?token={TOKEN}&reviewer=bob",
                                 headers={"Cookie": "annotune_review_0000000000=stale"})
    assert status == 303 and headers["Location"] == "/review?reviewer=bob"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    status, headers, body = request(srv, "GET", "/review?reviewer=bob", headers={"Cookie": f"{COOKIE}={TOKEN}"})
    assert status == 200 and 'data-doc="d1"' in body and CSRF in body and TOKEN not in body
    assert "nonce-" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert request(srv, "GET", "/review/api/next?reviewer=bob", headers=BEARER)[0] == 200
    assert request(srv, "GET", f"/review/api/next?reviewer=bob&token={TOKEN}")[0] == 200

    cookie_auth = {"Cookie": f"{COOKIE}={TOKEN}"}
    reject = {"reviewer": "bob", "doc_id": "d1", "decision": "reject"}
    assert request(srv, "POST", "/review/decide", form=reject, headers=cookie_auth)[0] == 403  # no CSRF field
    assert request(srv, "POST", "/review/decide", form={**reject, "csrf": "nope"}, headers=cookie_auth)[0] == 403
    cross = {**cookie_auth, "Sec-Fetch-Site": "cross-site"}
    assert request(srv, "POST", "/review/decide", form={**reject, "csrf": CSRF}, headers=cross)[0] == 403
    assert request(srv, "POST", "/review/undo", form={"reviewer": "bob"}, headers=cookie_auth)[0] == 403
    assert project.store.reviews() == []

    status, headers, _ = request(srv, "POST", "/review/decide", form={**reject, "csrf": CSRF}, headers=cookie_auth)
    assert status == 303 and headers["Location"] == "/review?reviewer=bob&saved=d1"
    status, _, _ = request(srv, "POST", "/review/decide", headers=BEARER,  # a script: bearer header, no CSRF
                           form={"reviewer": "bob", "doc_id": "d2", "decision": "accept",
                                 "proposal_id": proposal_id(project.store, "d2", "s1")})
    assert status == 303
    assert [(r["doc_id"], r["decision"]) for r in project.store.reviews()] == [("d1", "reject"), ("d2", "accept")]


def test_bad_forms_are_refused(served):
    project, srv = served
    store = project.store
    post = lambda form: request(srv, "POST", "/review/decide", form={"reviewer": "bob", **form}, headers=BEARER)[0]  # noqa: E731
    assert post({"doc_id": "d1", "decision": "maybe"}) == 400
    assert post({"doc_id": "nope", "decision": "reject"}) == 404
    assert post({"doc_id": "d1", "decision": "accept", "proposal_id": proposal_id(store, "d2", "s1")}) == 400
    assert post({"doc_id": "d3", "decision": "accept", "proposal_id": proposal_id(store, "d3", "s2")}) == 400  # INVALID
    assert post({"doc_id": "d1", "decision": "correct", "label": "weather"}) == 400
    assert post({"doc_id": "d1", "decision": "reject", "reviewer": " "}) == 400
    assert store.reviews() == []
    status, headers, _ = request(srv, "POST", "/review/undo", form={"reviewer": "bob"}, headers=BEARER)
    assert status == 303 and headers["Location"] == "/review?reviewer=bob&undone="


def test_verbose_access_log_never_shows_the_token(tmp_path, caplog):
    import logging

    project = make_project(tmp_path)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    with ServerThread(create_review_app(project, TOKEN), verbose=True) as srv:
        assert request(srv, "GET", f"/review?token={TOKEN}&reviewer=bob")[0] == 303
    project.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/review?token=***&reviewer=bob" in line for line in lines), lines
    assert not any(TOKEN in line for line in lines)


def test_each_browser_that_names_nobody_gets_a_name_of_its_own(tmp_path):
    """`annotune review` without --reviewer: two browsers opening the printed URL are two reviewers (two
    leases, two documents), and each keeps its name in its cookie."""
    project = make_project(tmp_path)
    auth = {"Cookie": f"{COOKIE}={TOKEN}"}
    with ServerThread(create_review_app(project, TOKEN, name_each_browser=True)) as srv:
        names, docs = [], []
        for _ in range(2):  # two browsers: the printed URL, then the page it redirects to
            status, headers, _ = request(srv, "GET", f"/review?token={TOKEN}")
            assert status == 303 and headers["Location"].startswith("/review?reviewer=reviewer-")
            name = headers["Location"].split("=", 1)[1]
            status, headers, body = request(srv, "GET", headers["Location"], headers=auth)
            assert status == 200 and f"reviewer={name}" in headers["Set-Cookie"]
            names.append(name)
            docs.append(body.split('data-doc="', 1)[1].split('"', 1)[0])
        assert names[0] != names[1] and docs[0] != docs[1]
        # a returning browser keeps its name (its cookie), and with it its leased document
        _, _, body = request(srv, "GET", "/review", headers={"Cookie": f"{COOKIE}={TOKEN}; "
                                                                       f"annotune_reviewer={names[0]}"})
        assert f'data-doc="{docs[0]}"' in body
    project.close()


# ------------------------------------------------------------------------------ two reviewers
def test_two_reviewers_never_overwrite_each_other(served):
    project, srv = served
    store = project.store

    def together(fn, args: list) -> list:
        barrier, out = threading.Barrier(len(args)), [None] * len(args)

        def run(i):
            barrier.wait()
            out[i] = fn(*args[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out

    def next_doc(reviewer: str) -> str:
        status, _, body = request(srv, "GET", f"/review/api/next?reviewer={reviewer}", headers=BEARER)
        assert status == 200
        return json.loads(body)["document"]["id"]

    shown = together(next_doc, [("bob",), ("carol",), ("dan",)])
    assert len(set(shown)) == 3  # leases: three reviewers, three documents
    assert [next_doc(r) for r in ("bob", "carol", "dan")] == shown  # each keeps theirs

    doc = shown[0]  # bob's; carol reviews it too, at the same moment, several times
    accept = {"doc_id": doc, "decision": "accept", "proposal_id": store.proposals_of(doc)[0]["id"]}
    other = next(n for n in ("politics", "business") if json.dumps(n) != store.proposals_of(doc)[0]["label"])
    correct = {"doc_id": doc, "decision": "correct", "label": other}
    forms = [({**accept, "reviewer": "bob"},), ({**correct, "reviewer": "carol"},)] * 4

    def post(form):
        return request(srv, "POST", "/review/decide", form=form, headers=BEARER)[0]

    assert together(post, forms) == [303] * len(forms)
    kept = store.reviews(doc)
    assert len(kept) == len(forms)
    assert sorted((r["reviewer"], r["decision"]) for r in kept) == sorted(
        [("bob", "accept")] * 4 + [("carol", "correct")] * 4)
    # the final label is the one all the kept reviews make (the last write saw every earlier one)
    expected = resolve_reviews(project.codebook, store.reviews(doc, active=False),
                               {p["id"]: p for p in store.proposals_of(doc)})
    final = store.final_labels()[doc]
    assert (final["label"], final["provenance"]) == (
        None if expected.label is None else json.dumps(expected.label), expected.provenance)


# ------------------------------------------------------------------------------ other task kinds
MULTI = {"d1": [("s1", ["sport"], 0.8)], "d2": [("s1", ["business", "tech"], 0.6)]}
DIMENSIONS = {"d1": [("s1", {"happiness": "high"}, 0.8)], "d2": [("s1", {}, 0.6)]}


@pytest.mark.parametrize("kind, proposals, form, label", [
    ("multi", MULTI, [("labels", "tech"), ("labels", "sport")], ["sport", "tech"]),
    ("dimensions", DIMENSIONS, [("dim0", "medium"), ("dim1", "none"), ("dim2", "low")],
     {"happiness": "medium", "perceiving discrimination": "low"}),
])
def test_correct_form_of_other_kinds(tmp_path, kind, proposals, form, label):
    project = make_project(tmp_path, kind, proposals)
    with ServerThread(create_review_app(project, TOKEN)) as srv:
        status, _, body = request(srv, "GET", "/review?reviewer=eve", headers=BEARER)
        assert status == 200 and 'data-doc="d1"' in body
        if kind == "multi":
            assert body.count('type="checkbox" name="labels"') == 4
            assert 'value="sport" checked' in body
        else:
            assert '<select name="dim0"' in body and '<select name="dim2"' in body
            assert '<option value="high" selected>' in body  # happiness, from the proposal
        status, _, _ = request(srv, "POST", "/review/decide", headers=BEARER,
                               form=[("reviewer", "eve"), ("doc_id", "d1"), ("decision", "correct"), *form])
        assert status == 303
    final = project.store.final_labels()["d1"]
    project.close()
    assert (json.loads(final["label"]), final["provenance"]) == (label, "human-corrected")


def test_label_from_form_checks_the_codebook():
    from fastapi import HTTPException

    multi, dims = make_codebook("multi"), make_codebook("dimensions")
    assert label_from_form(make_codebook("single"), FormData([("label", "sport")])) == "sport"
    for codebook, form in [(multi, [("labels", "weather")]), (multi, []),
                           (multi, [("labels", "sport"), ("labels", "tech"), ("labels", "business")]),
                           (dims, [("dim0", "extreme")]), (make_codebook("single"), [("label", "")])]:
        with pytest.raises(HTTPException) as exc:
            label_from_form(codebook, FormData(form))
        assert exc.value.status_code == 400
    assert label_from_form(dims, FormData([("dim0", "none")])) == {}


# ------------------------------------------------------------------------------ the command
def test_cli_refuses_a_remote_host_without_allow_remote(tmp_path):
    make_project(tmp_path).close()
    result = CliRunner().invoke(app, ["review", str(tmp_path / "p"), "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--allow-remote" in lines[0]
    assert "Traceback" not in result.output


def test_cli_prints_a_url_that_opens_the_page(tmp_path):
    make_project(tmp_path).close()
    proc = subprocess.Popen([sys.executable, "-m", "annotune.cli", "review", str(tmp_path / "p"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        url = ""
        for _ in range(5):
            line = proc.stdout.readline()
            if line.startswith("http://"):
                url = line.strip()
                break
        assert url.startswith("http://127.0.0.1:") and "/review?token=" in url, (url, proc.poll())
        host_port, _, path = url[len("http://"):].partition("/")
        conn = http.client.HTTPConnection(*host_port.split(":"), timeout=30)
        conn.request("GET", "/" + path)
        resp = conn.getresponse()
        assert resp.status == 303 and "HttpOnly" in resp.headers["Set-Cookie"]
        resp.read()
        conn.request("GET", "/review", headers={"Cookie": resp.headers["Set-Cookie"].split(";")[0]})
        resp = conn.getresponse()
        assert resp.status == 200 and 'data-doc="d1"' in resp.read().decode()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(30)
