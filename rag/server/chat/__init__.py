"""The OpenAI-compatible chat API: /v1/chat/completions (whole or streamed) and /v1/models."""
