"""System types: one module each, registered by type name (see `annotune.systems.base`)."""

from annotune.systems import (  # noqa: F401
    api, embedding, finetuned, head, llamacpp, predictions, prompt, reference, setfit_system, tfidf)
from annotune.systems.base import (
    RunContext,
    System,
    SystemConfig,
    get_system_class,
    register_system,
    system_types,
    unregister_system,
)

__all__ = ["System", "SystemConfig", "RunContext", "register_system", "unregister_system", "system_types",
           "get_system_class"]
