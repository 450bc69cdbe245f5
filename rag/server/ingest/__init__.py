"""Ingest over HTTP: uploaded files, or paths inside the folders the server may read."""
