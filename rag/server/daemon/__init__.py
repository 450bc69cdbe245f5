"""What the background server of `rag ask`/`rag chat` adds to the app: a status endpoint, a streamed ask endpoint
carrying the whole answer, idle tracking, and answering from a store that another process changed."""
