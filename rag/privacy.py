"""Every phone-home switch of our dependencies, turned off by the entry points (CLI, `RAG()`, tests) before any
of those dependencies is imported; importing `rag` itself changes nothing."""

import os

# Each of these is read by a third-party library at import time (onnxruntime's telemetry thread starts
# on import), so they must be set before anything else in the package runs.
OFF_SWITCHES: dict[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime (pulled in by chromadb)
    "ANONYMIZED_TELEMETRY": "False",  # chromadb
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never reach the hub at run time
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "LANGCHAIN_TRACING_V2": "false",  # LangSmith
    "LANGSMITH_TRACING": "false",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",  # avoids fork warnings, not network, but belongs with the env set-up
}


_USER_VALUES: dict[str, str | None] = {}


def apply() -> None:
    """Force the off switches into this process's environment, remembering what the user had set."""
    for key in OFF_SWITCHES:
        _USER_VALUES.setdefault(key, os.environ.get(key))  # the first call sees the user's environment
    os.environ.update(OFF_SWITCHES)


def user_value(key: str) -> str | None:
    """What `key` was in the environment before `apply()` overwrote it (None: unset)."""
    return _USER_VALUES.get(key)


def report() -> dict[str, str | None]:
    """What each switch is set to now (for `rag doctor`)."""
    return {key: os.environ.get(key) for key in OFF_SWITCHES}
