"""`annotune serve`: an OpenAI-compatible HTTP API (FastAPI on uvicorn) over a local or fine-tuned model.

Any OpenAI client (the ``openai`` SDK, LangChain, curl, annotune's own API backend) can then use it::

    annotune serve runs/bbc/finetuned/all-1234 --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"model": "all-1234", "messages": [...]}'

From Python::

    from annotune.backends.local import LocalBackend
    from annotune.serve import create_app, start_server

    srv = start_server(create_app(LocalBackend("smollm2"), model_name="smollm2"))
    ...  # openai.OpenAI(base_url=srv.url, api_key="unused")
    srv.stop()

Modules: `app` (the app factory, auth, size limit, model gate), `openai` (the routes), `completions`
(requests checked and answered with the engine), `errors` (OpenAI-style error bodies), `server`
(uvicorn in the foreground or on a thread).
"""

from annotune.serve.app import create_app
from annotune.serve.server import ServerThread, bind_socket, run_server, start_server

__all__ = ["ServerThread", "bind_socket", "create_app", "run_server", "start_server"]
