"""The servers that scripts/ start for the tests and the benchmarks (Ceph, Swift, a RabbitMQ
cluster), each script imported as a module. Needs nothing but the standard library, so the
benchmarks load the scripts through it too.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/NAME (no .py suffix) imported as the module NAME with ``_`` for ``-``, once per
    process (registered in sys.modules, where dataclasses look their module up)."""
    module_name = name.replace("-", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader = importlib.machinery.SourceFileLoader(module_name, str(SCRIPTS / name))
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
