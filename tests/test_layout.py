"""The layout rules of docs/architecture.md, read from the code's own imports.

The folders transports/ and backup/ install as ``notifykit.transports`` and
``notifykit.backup``. The core never imports them; transports/ use only the core's public
modules; backup/ only the application API, the names in ``notifykit.__all__`` (not
``notifykit.testing``, not a private module), and the plugin toolkit ``notifykit.plugin``
its object stores are built with. Nothing imports ``transports`` or ``backup``
as top-level modules: those names belong to the user's own code.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterator
from pathlib import Path

import notifykit

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {"notifykit", "notifykit.transport", "notifykit.plugin", "notifykit.testing", "notifykit.deadletters",
                  "notifykit.signing"}


def relative_imports(package: str) -> Iterator[tuple[str, str, list[str]]]:
    """(file, module, names) for each relative import (``from .x import y``) in the package's files."""
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                yield path.name, node.module or "", [alias.name for alias in node.names]


def absolute_imports(package: str) -> Iterator[tuple[str, str, list[str]]]:
    """(file, module, names) for each absolute import in the package's files."""
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path.name, node.module, [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, alias.name, []


PLUGIN_PACKAGES = {"notifykit.transports": "transports", "notifykit.backup": "backup"}


def python_files() -> Iterator[Path]:
    for folder in ("notifykit", "transports", "backup", "tests", "examples", "benchmarks", "scripts"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_transports_and_backup_install_under_the_notifykit_namespace() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert setuptools["package-dir"] == PLUGIN_PACKAGES
    assert set(setuptools["packages"]) == {"notifykit", *PLUGIN_PACKAGES}
    for name, folder in PLUGIN_PACKAGES.items():
        module = importlib.import_module(name)
        assert Path(module.__file__ or "").resolve().parent == ROOT / folder


def test_nothing_imports_transports_or_backup_as_top_level_modules() -> None:
    wrong = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            wrong += [(str(path.relative_to(ROOT)), n) for n in names if n.split(".")[0] in {"transports", "backup"}]
    assert wrong == []


def test_the_core_never_imports_transports_or_backup() -> None:
    wrong = [(f, m) for f, m, _ in absolute_imports("notifykit")
             if m.split(".")[:2] in (["notifykit", "transports"], ["notifykit", "backup"])]
    assert wrong == []


def test_transports_import_only_the_cores_public_modules() -> None:
    wrong = [(f, m) for f, m, _ in absolute_imports("transports")
             if m.split(".")[0] == "notifykit" and m not in PUBLIC_MODULES]
    assert wrong == []


def test_backup_imports_only_the_application_api() -> None:
    """backup/ (its CLI aside: CLIs may import everything) uses the names of notifykit.__all__
    and the plugin toolkit, notifykit.plugin; nothing private of the core."""
    wrong = [(f, m, names) for f, m, names in absolute_imports("backup")
             if f != "cli.py" and m.split(".")[0] == "notifykit" and m != "notifykit.plugin"
             and (m != "notifykit" or not set(names) <= set(notifykit.__all__))]
    assert wrong == []


def test_nothing_imports_a_cli() -> None:
    """The two CLIs (notifykit/cli.py, backup/cli.py) are leaves; tests drive them."""
    clis = {"notifykit.cli", "notifykit.backup.cli"}
    wrong = [(f"{package}/{f}", m) for package in ("notifykit", "transports", "backup")
             for f, m, names in absolute_imports(package)
             if m in clis or (m in {"notifykit", "notifykit.backup"} and "cli" in names)]
    wrong += [(f"{package}/{f}", m) for package in ("notifykit", "backup")
              for f, m, names in relative_imports(package) if m == "cli" or "cli" in names]
    assert wrong == []
