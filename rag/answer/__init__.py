"""Answering: the prompts (English, Chinese), the chat model (llama.cpp or a server) and the LCEL chain that
turns retrieved passages into an answer with numbered citations."""
