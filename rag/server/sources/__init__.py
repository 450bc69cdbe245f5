"""What the server's store holds: /api/sources."""
