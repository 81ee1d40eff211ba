"""The review page (`annotune review`): one queued document at a time with its proposals, server-rendered
(forms work without JavaScript; a small inline script adds the keyboard shortcuts 1-9, r, c, u).

    app = create_review_app(Project.open("tweets"), secrets.token_urlsafe(24))

Routes: ``GET /review`` (the page; ``?token=`` sets the access cookie, ``?reviewer=`` the reviewer),
``POST /review/decide`` (accept / reject / correct), ``POST /review/undo``, ``GET /review/api/next`` (the same
as JSON) and the health checks. Every other request needs the token (query, cookie or bearer header); every
POST also needs the page's CSRF field (or the bearer header). Each POST answers 303 to the next document.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from annotune.labelling.schema import reviews as reviews_table
from annotune.serve.app import DEFAULT_MAX_BODY_BYTES, BearerAuth, base_app

TEMPLATES = Path(__file__).parent / "templates"
REVIEWER_COOKIE = "annotune_reviewer"
MAX_REVIEWER = 100

router = APIRouter()


@dataclass
class ReviewState:
    """What the routes share, as ``app.state.review``."""

    project: Any  # a `Project`
    token: str
    reviewer: str = "reviewer"  # when neither ``?reviewer=`` nor the cookie names one
    # each browser that names nobody gets a name of its own (``reviewer-3fa29c01``, kept in its cookie), so
    # that two people never share one name's lease, votes and undo
    name_each_browser: bool = False

    @property
    def cookie(self) -> str:
        """The access cookie's name: one per token, so that a restarted server or a second one on another
        port never reads a stale cookie."""
        return "annotune_review_" + hashlib.sha256(self.token.encode()).hexdigest()[:10]

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), b"annotune review form", hashlib.sha256).hexdigest()


def create_review_app(project, token: str, *, reviewer: str = "reviewer", name_each_browser: bool = False,
                      max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The review page of ``project`` behind ``token`` (see the module docstring); with ``name_each_browser``,
    a browser that names no reviewer becomes ``<reviewer>-<8 hex digits>`` instead of ``reviewer``."""
    app = base_app("annotune review", max_body_bytes=max_body_bytes)
    mount_review(app, project, token, reviewer=reviewer, name_each_browser=name_each_browser)
    app.add_middleware(BearerAuth, token=token, cookie=app.state.review.cookie)  # added last: runs first
    return app


def mount_review(app: FastAPI, project, token: str, *, reviewer: str = "reviewer",
                 name_each_browser: bool = False) -> None:
    """Add the review routes to ``app`` (whose auth middleware must accept ``app.state.review.cookie``)."""
    if not token:
        raise ValueError("the review page needs an access token")
    if clean_reviewer(reviewer) is None:
        raise ValueError(f"a reviewer name is 1 to {MAX_REVIEWER} printable characters, not {reviewer!r}")
    app.state.review = ReviewState(project, token, clean_reviewer(reviewer), name_each_browser)
    app.include_router(router)


# ------------------------------------------------------------------ reviewers, CSRF, labels from forms
def clean_reviewer(name: str | None) -> str | None:
    """The reviewer name stripped, or None when it is not 1 to `MAX_REVIEWER` printable characters."""
    name = (name or "").strip()
    return name if name and len(name) <= MAX_REVIEWER and name.isprintable() else None


def check_reviewer(name: str | None) -> str:
    if (clean := clean_reviewer(name)) is None:
        raise HTTPException(400, f"a reviewer name is 1 to {MAX_REVIEWER} printable characters, not {name!r}")
    return clean


def reviewer_of(request: Request, state: ReviewState, form=None) -> str:
    """The form's reviewer, else ``?reviewer=``, else the cookie, else the app's default."""
    given = (form or {}).get("reviewer") or request.query_params.get("reviewer")
    if not given and REVIEWER_COOKIE in request.cookies:
        given = unquote(request.cookies[REVIEWER_COOKIE])
    return check_reviewer(given or state.reviewer)


def check_post(request: Request, state: ReviewState, form) -> None:
    """A POST must come from the page: its CSRF field, or a bearer header (not sent by a browser on its own)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(403, "cross-site form posts are refused")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), state.token.encode()):
        return
    if not hmac.compare_digest(str(form.get("csrf", "")).encode(), state.csrf.encode()):
        raise HTTPException(403, "the form is out of date (was the server restarted?): reload the page")


def label_from_form(codebook, form) -> Any:
    """The reviewer's label (JSON data) from the correct form; HTTPException 400 when it does not fit."""
    task, names = codebook.task, codebook.label_names
    kind = task.name
    if kind == "single":
        value = form.get("label")
        if value not in names:
            raise HTTPException(400, f"not a label of the codebook: {value!r}")
        return task.label_to_json(value)
    if kind == "multi":
        chosen = set(form.getlist("labels"))
        if not chosen or not chosen <= set(names):
            raise HTTPException(400, "choose one or more labels of the codebook (reject all: none applies)")
        if codebook.max_labels is not None and len(chosen) > codebook.max_labels:
            raise HTTPException(400, f"at most {codebook.max_labels} labels")
        return task.label_to_json(tuple(n for n in names if n in chosen))
    if kind == "dimensions":
        out, absent = {}, absent_of(codebook)
        for i, name in enumerate(names):  # a dimension left out of the form is absent
            value = form.get(f"dim{i}", absent)
            if value in codebook.scale:
                out[name] = value
            elif value != absent:
                raise HTTPException(400, f"{value!r} is not on the scale of {name!r}")
        return task.label_to_json(out)
    try:  # another kind: the label as JSON text
        value = task.label_from_json(json.loads(form.get("label_json", "")))
        task.answer_text(value)
        return task.label_to_json(value)
    except (ValueError, TypeError) as exc:
        raise HTTPException(400, f"not a label of the codebook: {exc}") from None


def absent_of(codebook) -> str:
    from annotune.tasks.dimensions import absent_value

    return absent_value(codebook)


def describe(label: Any) -> str:
    """A proposal's JSON label in words."""
    if isinstance(label, str):
        return label
    if isinstance(label, list):
        return ", ".join(map(str, label)) or "(none)"
    if isinstance(label, dict):
        return "; ".join(f"{k}: {v}" for k, v in label.items()) or "(none present)"
    return json.dumps(label, ensure_ascii=False)


# ------------------------------------------------------------------ what the page shows
def progress(store, reviewer: str) -> dict:
    """Documents with an active review (in all, and by ``reviewer``) and the queue size."""
    active = reviews_table.c.undone_at.is_(None)
    count = sa.select(sa.func.count(sa.distinct(reviews_table.c.doc_id)))
    with store.engine.connect() as conn:
        done = conn.execute(count.where(active)).scalar_one()
        mine = conn.execute(count.where(active, reviews_table.c.reviewer == reviewer)).scalar_one()
    return {"reviewed": done, "mine": mine, "queue": store.queue_size()}


def next_item(project, reviewer: str) -> dict:
    """The next document for ``reviewer`` (leased to them) with its proposals, and the progress."""
    store = project.store
    entry = store.next_for(reviewer)
    out: dict[str, Any] = {"reviewer": reviewer, "document": None, "proposals": []}
    if entry is not None:
        docs = store.documents([entry["doc_id"]])
        text = docs[0]["text"] if docs else ""
        out["document"] = {"id": entry["doc_id"], "text": text, "reason": entry["reason"]}
        for p in store.proposals_of(entry["doc_id"]):
            label = None if p["label"] is None else json.loads(p["label"])
            out["proposals"].append({"id": p["id"], "system": p["system"], "label": label,
                                     "text": "INVALID" if label is None else describe(label),
                                     "probability": p["probability"], "raw": p["raw"]})
    out["progress"] = progress(store, reviewer)
    return out


def preselected(codebook, proposals: list[dict]) -> Any:
    """The correct form's starting label: the most probable valid proposal's."""
    valid = [p for p in proposals if p["label"] is not None]
    if not valid:
        return {} if codebook.task.name == "dimensions" else None
    return max(valid, key=lambda p: -1.0 if p["probability"] is None else p["probability"])["label"]


_env = None


def render(name: str, **context: Any) -> str:
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                                  autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
                                  trim_blocks=True, lstrip_blocks=True)
    return _env.get_template(name).render(**context)


def page_headers(nonce: str) -> dict:
    return {"Content-Security-Policy": f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                                       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


def back_to_page(reviewer: str, **extra: str) -> RedirectResponse:
    return RedirectResponse("/review?" + urlencode({"reviewer": reviewer, **extra}), status_code=303)


# ------------------------------------------------------------------ routes
@router.get("/", include_in_schema=False)
def root(request: Request) -> RedirectResponse:
    query = request.url.query
    return RedirectResponse("/review" + (f"?{query}" if query else ""), status_code=303)


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request):
    state: ReviewState = request.app.state.review
    reviewer = reviewer_of(request, state)
    if state.name_each_browser and not request.query_params.get("reviewer") and REVIEWER_COOKIE not in request.cookies:
        reviewer = f"{reviewer}-{secrets.token_hex(4)}"  # a browser's first visit: a name of its own
    given = request.query_params.get("token")
    if given is not None:  # the URL printed at start: keep the token in a cookie, not in the address bar
        response = back_to_page(reviewer)
        if hmac.compare_digest(given.encode(), state.token.encode()):
            response.set_cookie(state.cookie, state.token, httponly=True, samesite="lax",
                                secure=request.url.scheme == "https")
        return response
    item = next_item(state.project, reviewer)
    codebook = state.project.codebook
    nonce = secrets.token_urlsafe(16)
    notice = ""
    if "saved" in request.query_params:
        notice = f"Saved your review of {request.query_params['saved']} (u: undo)."
    elif "undone" in request.query_params:
        undone = request.query_params["undone"]
        notice = f"Undid your review of {undone}." if undone else "Nothing to undo."
    html = render("review.html", item=item, reviewer=reviewer, csrf=state.csrf, nonce=nonce, notice=notice,
                  project=state.project.cfg.name, kind=codebook.task.name, names=codebook.label_names,
                  scale=list(codebook.scale or ()) if codebook.task.name == "dimensions" else [],
                  absent=absent_of(codebook) if codebook.task.name == "dimensions" else "",
                  selected=preselected(codebook, item["proposals"]))
    response = HTMLResponse(html, headers=page_headers(nonce))
    if request.query_params.get("reviewer") or REVIEWER_COOKIE not in request.cookies:
        response.set_cookie(REVIEWER_COOKIE, quote(reviewer), samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/review/api/next")
def review_next(request: Request) -> JSONResponse:
    """The page as JSON: the next document for ``?reviewer=`` (leased to them), its proposals, the progress."""
    state: ReviewState = request.app.state.review
    return JSONResponse(next_item(state.project, reviewer_of(request, state)))


@router.post("/review/decide")
async def decide(request: Request) -> RedirectResponse:
    state: ReviewState = request.app.state.review
    form = await request.form()
    check_post(request, state, form)
    reviewer = reviewer_of(request, state, form)
    doc_id, decision = str(form.get("doc_id", "")), form.get("decision")
    note = str(form.get("note", "")).strip()[:2000] or None
    row: dict[str, Any] = {"doc_id": doc_id, "decision": decision, "reviewer": reviewer, "note": note}
    if decision == "correct":
        row["label"] = label_from_form(state.project.codebook, form)
    elif decision not in ("accept", "reject"):
        raise HTTPException(400, f"decision is accept, reject or correct, not {decision!r}")
    await run_in_threadpool(_store_review, state.project.store, row, form.get("proposal_id"))
    return back_to_page(reviewer, saved=doc_id)


def _store_review(store, row: dict, proposal_id: Any) -> None:
    if not store.documents([row["doc_id"]]):
        raise HTTPException(404, f"no document {row['doc_id']!r}")
    if row["decision"] == "accept":
        proposals = {str(p["id"]): p for p in store.proposals_of(row["doc_id"])}
        chosen = proposals.get(str(proposal_id))
        if chosen is None or chosen["label"] is None:
            raise HTTPException(400, f"document {row['doc_id']!r} has no valid proposal {proposal_id!r} to accept")
        row["proposal_id"] = chosen["id"]
    store.add_reviews([row], source="web")


@router.post("/review/undo")
async def undo(request: Request) -> RedirectResponse:
    state: ReviewState = request.app.state.review
    form = await request.form()
    check_post(request, state, form)
    reviewer = reviewer_of(request, state, form)
    doc_id = await run_in_threadpool(state.project.store.undo_last, reviewer)
    return back_to_page(reviewer, undone=doc_id or "")


__all__ = ["create_review_app", "mount_review", "ReviewState", "router", "label_from_form"]
