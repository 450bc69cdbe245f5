"""The browser chat page the server shows at /."""
