"""`annotune review`: the review page of a labelling project (`annotune.labelling.review_app`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from annotune.cli.app import app, console, log, user_errors
from annotune.cli.labelling import open_project, project_argument, store_option


def page_url(host: str, port: int, token: str) -> str:
    """The URL to open: an unspecified address (0.0.0.0, ::) is reached as this machine's loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/review?token={token}"


@app.command()
@user_errors
def review(
    folder: Path = project_argument(),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8765, "--port", "-p", help="Port (0: any free port)."),
    reviewer: str = typer.Option(None, "--reviewer", help="Reviewer name when the URL gives none "
                                 "(?reviewer=NAME; remembered in a cookie). Default: each browser gets a name "
                                 "of its own (reviewer-3fa29c01), which the page lets its reviewer change."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a --host other machines can reach "
                                      "(plain HTTP: put it behind HTTPS for a network)."),
    store: str = store_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each request line."),
):
    """Serve the review page: one queued document at a time with its proposals; accept, reject or correct,
    undo (keys 1-9, r, c, u). Opens with a random access token printed here."""
    import secrets

    from annotune.errors import ConfigError
    from annotune.labelling.review_app import MAX_REVIEWER, clean_reviewer, create_review_app
    from annotune.serve import bind_socket, run_server
    from annotune.serve.server import is_loopback

    if not is_loopback(host) and not allow_remote:
        raise ConfigError(f"refusing to serve the review page on {host}, which other machines can reach: pass "
                          "--allow-remote to allow it (the access token still protects it), or use --host 127.0.0.1",
                          field="--host")
    if reviewer is not None and clean_reviewer(reviewer) is None:
        raise ConfigError(f"a reviewer name is 1 to {MAX_REVIEWER} printable characters", field="--reviewer")
    project = open_project(folder, store)
    token = secrets.token_urlsafe(24)
    sock = bind_socket(host, port)
    try:
        application = create_review_app(project, token, reviewer=reviewer or "reviewer",
                                        name_each_browser=reviewer is None)
        if not is_loopback(host):
            log(f"warning: serving on {host} over plain HTTP: anyone on the network path can read the token")
        bound = sock.getsockname()[1]
        console.print(f"review page of {project.cfg.name!r} ({project.store.queue_size():,} documents queued); "
                      f"open:\n{page_url(host, bound, token)}", markup=False, highlight=False, soft_wrap=True)
        sys.stdout.flush()
        run_server(application, sock, verbose=verbose)
    except KeyboardInterrupt:
        log("stopped.")
    finally:
        sock.close()
        project.close()
