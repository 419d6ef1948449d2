"""``python -m sciml``: the same as the ``sciml`` command."""

if __name__ == "__main__":  # guarded: pytest's doctest collection imports this module
    import sys

    from ._cli import main

    sys.exit(main())
