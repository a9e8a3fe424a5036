"""CLI subcommands, one module each (see kohya_lite/cli.py)."""
