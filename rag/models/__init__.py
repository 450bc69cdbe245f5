"""Models: find the packaged and user models (embedding and chat), read GGUF headers, download from the hub
on request (`rag models pull`, the one place rag goes online)."""
