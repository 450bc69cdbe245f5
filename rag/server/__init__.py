"""`rag serve`: the HTTP front end (an OpenAI-compatible chat API, ingest and sources endpoints, a chat page),
a thin shell over `RAG`."""
