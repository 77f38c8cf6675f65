"""Fixtures of the browser tests: one chromium per module, one offline page per test (on the module's `base_url`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from spine_browser_testlib import browser_session, offline_page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_session()


@pytest.fixture
def viewer(browser: Any, base_url: str) -> Iterator[tuple[Any, list[str]]]:
    page, problems = offline_page(browser, base_url)
    try:
        yield page, problems
    finally:
        page.close()
