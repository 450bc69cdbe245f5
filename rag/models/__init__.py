"""Models: the packaged models and ModelError (packaged), GGUF headers and whether a model runs here (gguf),
the `model` setting resolved to a file (resolve), and downloads from the hub on request (hub, `rag models pull`,
the one place rag goes online)."""
