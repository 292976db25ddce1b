"""``python -m pipeline.cli``: the ``a2net`` command."""

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
