"""Placeholder; replaced by the CLI implementation."""


def main() -> int:
    """Run the CLI."""
    return 0
