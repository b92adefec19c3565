"""The layering of docs/ARCHITECTURE.md, enforced: a module imports only its own layer and those below."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Top to bottom, as in docs/ARCHITECTURE.md. fsmount/__init__.py, config.py, errors.py and logs.py are shared.
LAYERS = ["cli", "ui", "fs", "service", "overlay", "api", "check", "commit", "cache", "format", "store"]
SHARED = {"config", "errors", "logs", ""}


def _layer_of_module(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fsmount":
        return None
    sub = parts[1] if len(parts) > 1 else ""
    return None if sub in SHARED else sub


def _source_files() -> list[tuple[str, Path]]:
    files = [("cli", p) for p in (ROOT / "cli").glob("*.py")]
    for layer in LAYERS[1:]:
        files += [(layer, p) for p in (ROOT / "fsmount" / layer).glob("*.py")]
    return files


def test_imports_point_down_only() -> None:
    wrong = []
    for layer, path in _source_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                target = _layer_of_module(name)
                if target is None or target == layer:
                    continue
                assert target in LAYERS, f"{path}: unknown layer {target!r} (add it to docs and here)"
                if LAYERS.index(target) < LAYERS.index(layer):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    wrong.append(f"{where} ({layer}) imports {name} ({target})")
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in (ROOT / "fsmount").iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), packages - set(LAYERS)
