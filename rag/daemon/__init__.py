"""Warm answers: `rag ask` and `rag chat` hand their question to a background `rag` server that keeps the model
loaded (started on first use, on a private Unix socket, gone after `keep_alive` idle seconds); `rag ps`/`rag stop`."""
