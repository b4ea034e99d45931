"""Stores: the storage interface (``base``) and its backends (``sqlite``)."""
