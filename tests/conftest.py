"""Session-wide settings and checks.

* Hypothesis profiles: ``dev`` (few examples, the default on a developer's machine) and ``ci``
  (many more, chosen when ``CI`` is set, as CI's runner sets it); ``HYPOTHESIS_PROFILE`` picks
  one by name.
* ``basira``: the one runner of the command line (:class:`tests.cli.Basira`), in this process
  or as its own.
* The engine choice cache (``BASIRA_ENGINE_CACHE``) lives in a session folder.
* Every coded reason the suite produces is documented in docs/errors.md: the ledger
  (:mod:`tests.reason_ledger`) watches what reaches people while the tests run; at the end of
  the session (after merging what pytest-xdist workers saw) an undocumented code fails the run
  and is listed with the test that produced it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests import reason_ledger
from tests.cli import Basira

_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "dev", max_examples=12, deadline=None, suppress_health_check=_SLOW_EXAMPLES
)
settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=_SLOW_EXAMPLES
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

_WORKER_KEY = "basira_reason_codes"
_UNDOCUMENTED: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    reason_ledger.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    reason_ledger.CURRENT_TEST[0] = item.nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: merge what a worker's tests produced."""
    seen = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if seen:
        for code, test in json.loads(seen).items():
            reason_ledger.LEDGER.setdefault(code, test)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller checks
        workeroutput[_WORKER_KEY] = json.dumps(reason_ledger.LEDGER)
        return
    errors_md = reason_ledger.ERRORS_MD.read_text(encoding="utf-8")
    _UNDOCUMENTED.update(reason_ledger.undocumented(reason_ledger.LEDGER, errors_md))
    if _UNDOCUMENTED and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _UNDOCUMENTED:
        terminalreporter.section("reason codes missing from docs/errors.md", red=True)
        for code, test in _UNDOCUMENTED.items():
            terminalreporter.line(f"{code}  (first produced by {test})")


@pytest.fixture
def basira() -> Basira:
    """Run ``basira ARGS``: ``basira(*args)`` in this process, ``basira.run(*args)`` as its own."""
    return Basira()


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``basira predict`` and the service cache their engine choice (``BASIRA_ENGINE_CACHE``);
    the tests' choices go to a session folder, never to the user's ``~/.cache``."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("engine-cache") / "engine-choice.json"
        patch.setenv("BASIRA_ENGINE_CACHE", str(cache))
        yield
