"""The package's layering holds: lower layers do not import upper ones (checked in a fresh interpreter)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_after(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_check_imports_neither_the_engine_nor_torch_nor_the_page():
    mods = _imported_after("kohya_lite.check")
    assert not {m for m in mods if m.startswith(("kohya_lite.engine", "kohya_lite.ui", "kohya_lite.worker"))}
    assert "torch" not in mods and "gradio" not in mods


def test_demo_builder_and_paths_do_not_import_the_page():
    for module in ("kohya_lite.paths", "kohya_lite.demo", "kohya_lite.prompts", "kohya_lite.media"):
        mods = _imported_after(module)
        assert not {m for m in mods if m.startswith("kohya_lite.ui")} and "gradio" not in mods, module


def test_the_cli_starts_without_torch():
    """`kohya-lite check`, `--help` and argument errors answer at once: torch loads only for the work itself."""
    assert "torch" not in _imported_after("kohya_lite.cli; kohya_lite.cli.build_parser()")


def test_models_do_not_import_the_network():
    """models and network are siblings over config: network may use models' facts, never the other way."""
    import ast

    for path in (ROOT / "kohya_lite" / "models").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("kohya_lite.network", "kohya_lite.engine", "kohya_lite.ui")), \
                    f"{path.name} imports {node.module}"
