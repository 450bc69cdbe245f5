"""Whether the server is up and how busy its model is: /health."""
