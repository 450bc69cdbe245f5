"""The store's one error type: a store that cannot be opened or written, said in one line."""


class StoreError(Exception):
    """A store that cannot be opened or written."""
