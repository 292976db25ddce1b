"""a2nets pipeline: the DVC stages, the library they share, and the ``a2net`` command line."""
