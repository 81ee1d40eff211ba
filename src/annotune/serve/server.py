"""Running the app on uvicorn: in the foreground (`run_server`, the CLI) or on a background thread
(`start_server` → `ServerThread`, for tests and Python users), on a socket bound up front so that
port 0 (any free port) gives the URL before the first request."""

from __future__ import annotations

import copy
import logging
import re
import socket
import threading
import time
from typing import Self

from annotune.errors import ConfigError


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); ConfigError if it cannot."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # clients that connect before uvicorn runs wait instead of being refused
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, IPv6 possibly in brackets) is reachable from this machine only."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_of(sock: socket.socket) -> str:
    """The OpenAI base URL (``http://host:port/v1``) of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


class RedactTokens(logging.Filter):
    """Access-log lines show ``?token=***``: the review page's URL carries its access token."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str) and "token=" in args[2]:
            record.args = (*args[:2], re.sub(r"(token=)[^&#\s]*", r"\1***", args[2]), *args[3:])
        return True


def _config(app, *, verbose: bool, log_config: bool, graceful_timeout: float):
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    logging_config = None
    if log_config:  # our own process: uvicorn's log format, everything on stderr
        logging_config = copy.deepcopy(LOGGING_CONFIG)
        logging_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
        logging_config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
        logging_config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return uvicorn.Config(app, log_config=logging_config, log_level="info" if verbose else "warning",
                          access_log=verbose, server_header=False, lifespan="auto",
                          timeout_graceful_shutdown=graceful_timeout)


def run_server(app, sock: socket.socket, *, verbose: bool = False, graceful_timeout: float = 10.0) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C / SIGTERM (graceful: answers in progress finish)."""
    import uvicorn

    uvicorn.Server(_config(app, verbose=verbose, log_config=True, graceful_timeout=graceful_timeout)).run(
        sockets=[sock])


class ServerThread:
    """``app`` served by uvicorn on a daemon thread; ``url`` is its OpenAI base URL. Use `start_server`,
    or ``with ServerThread(app) as srv:``; `stop` ends it (requests in progress get
    ``graceful_timeout`` seconds, then are cancelled)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False,
                 graceful_timeout: float = 5.0):
        import uvicorn

        self.app = app
        self._sock = bind_socket(host, port)
        self.url = url_of(self._sock)
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(_config(app, verbose=verbose, log_config=False,
                                              graceful_timeout=graceful_timeout))
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"annotune-serve-{self.port}")
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise RuntimeError(f"the server did not start: {self._error!r}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let requests in progress finish (or cancel them), end the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> Self:
        if not self._thread.is_alive():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(app, host: str = "127.0.0.1", port: int = 0, **kw) -> ServerThread:
    """Serve ``app`` on a background thread (127.0.0.1, any free port by default) and return once it
    answers; ``.url`` is the base URL, ``.stop()`` ends it."""
    return ServerThread(app, host, port, **kw).start()
