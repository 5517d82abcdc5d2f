"""The layout rules of docs/architecture.md, read from the code's own imports.

The core never imports transports/ or backup/; transports/ use only the core's public
modules; backup/ only the application API, the names in ``notifykit.__all__`` (not
``notifykit.testing``, not a private module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import notifykit

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {"notifykit", "notifykit.transport", "notifykit.testing", "notifykit.deadletters", "notifykit.signing"}


def absolute_imports(package: str) -> Iterator[tuple[str, str, list[str]]]:
    """(file, module, names) for each absolute import in the package's files."""
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path.name, node.module, [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, alias.name, []


def test_the_core_never_imports_transports_or_backup() -> None:
    wrong = [(f, m) for f, m, _ in absolute_imports("notifykit") if m.split(".")[0] in {"transports", "backup"}]
    assert wrong == []


def test_transports_import_only_the_cores_public_modules() -> None:
    wrong = [(f, m) for f, m, _ in absolute_imports("transports")
             if m.split(".")[0] == "notifykit" and m not in PUBLIC_MODULES]
    assert wrong == []


def test_backup_imports_only_the_application_api() -> None:
    wrong = [(f, m, names) for f, m, names in absolute_imports("backup")
             if m.split(".")[0] == "notifykit" and (m != "notifykit" or not set(names) <= set(notifykit.__all__))]
    assert wrong == []
