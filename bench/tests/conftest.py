"""The bench's tests run in the repository's pytest session (pytest.ini's
testpaths) and share its database fixtures, defined in tests/conftest.py.

That file is a conftest of another folder, so pytest does not offer its
fixtures here by itself; it is loaded by path, and the fixtures the bench
needs are taken from it. Only ``admin_url``: the benchmark creates and drops
databases of its own. (``template_db`` must not be taken: a second copy of
that session fixture would recreate the template the other tests clone.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_CONFTEST = Path(__file__).resolve().parents[2] / "tests" / "conftest.py"
_NAME = "conveyor_tests_conftest"


def _load() -> object:
    module = sys.modules.get(_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_NAME, _CONFTEST)
        assert spec is not None and spec.loader is not None, _CONFTEST
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return module


admin_url = _load().admin_url  # type: ignore[attr-defined]
