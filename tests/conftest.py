"""Shared test plumbing.

Tests marked `required_in_ci` skip on a developer's machine that lacks their tool (a Docker
engine, bubblewrap, chromium) and say why; in CI (`CI=true`), where `.ci/run` installs those
tools, such a skip is a failure, so a missing tool can never pass unnoticed.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and item.get_closest_marker("required_in_ci") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where this test must run: {reason}"
