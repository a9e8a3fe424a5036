"""Start the kohya-lite GUI (same as `kohya-lite gui`). Pass --demo to open the built-in CPU demo project."""

import sys

from kohya_lite.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["gui", *sys.argv[1:]]))
