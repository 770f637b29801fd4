"""The package's shape: the import layers hold (import-linter), and no module uses another
module's private (`_underscore`) names."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerneldsl"


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses() -> list[str]:
    """`from m import _x` and `alias._x` where m / alias is another kerneldsl module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_of(path)
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}  # local name -> kerneldsl module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(module, node, path.name == "__init__.py")
                if not src.startswith("kerneldsl"):
                    continue
                for a in node.names:
                    if a.name.startswith("_") and src != module:
                        found.append(f"{module}: from {src} import {a.name}")
                    sub = f"{src}.{a.name}"
                    if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (ROOT / Path(*sub.split("."))).is_dir():
                        aliases[a.asname or a.name] = sub
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("kerneldsl"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "kerneldsl"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and node.value.id in aliases \
                    and aliases[node.value.id] != module:
                found.append(f"{module}: {node.value.id}.{node.attr} ({aliases[node.value.id]})")
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_uses() == []


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter (the dev extra) not installed")
def test_import_layers_hold():
    r = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
