"""`annotune serve`: a local or fine-tuned model behind an OpenAI-compatible API."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from annotune.cli.app import app, console, log, user_errors
from annotune.environment import quiet_libraries


@app.command()
@user_errors
def serve(
    model: str = typer.Argument(..., help="Model to serve: smollm2, a HF folder or hub id, a .gguf file, or a "
                                "fine-tuned run folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8000, "--port", "-p", help="Port (0: any free port)."),
    name: str = typer.Option(None, "--name", help="Model id clients send (default: the folder or file name)."),
    token_env: str = typer.Option(None, "--token-env", help="Environment variable holding a bearer token that "
                                  "clients must send (Authorization: Bearer ...)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, bf16, fp16 or fp32."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each request line."),
):
    """Serve a local or fine-tuned model through an OpenAI-compatible API (/v1/chat/completions,
    /v1/models), with logprobs and label-enum constraints, so any OpenAI client can use it."""
    quiet_libraries()
    from annotune.backends.local import LocalBackend
    from annotune.errors import ConfigError
    from annotune.serve import bind_socket, create_app, run_server
    from annotune.serve.server import is_loopback, url_of

    token = None
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise ConfigError(f"the environment variable {token_env} (--token-env) is not set")
    if not is_loopback(host) and not token:
        log(f"warning: serving on {host} without a bearer token: anyone who can reach this address can use "
            "the model (use --token-env)")
    sock = bind_socket(host, port)
    try:
        engine = LocalBackend(model, dtype=dtype)
        name = name or Path(str(model)).name or engine.name or "annotune"
        app = create_app(engine, model_name=name, token=token)
        console.print(f"serving {name!r} on {url_of(sock)}", markup=False, highlight=False)
        sys.stdout.flush()
        run_server(app, sock, verbose=verbose)
    except KeyboardInterrupt:
        log("stopped.")
    finally:
        sock.close()
