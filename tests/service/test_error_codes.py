"""One table of error codes (spine_engine.errors.ERROR_CODES): the README and the OpenAPI document show it, and
the code base raises no code outside it."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from spine_engine.errors import ERROR_CODES, error_code_table

REPO = Path(__file__).resolve().parents[2]
# Where a code is written: `code = "x"`, `status_code, code = 404, "x"`, an error built with (status, "x", ...),
# a state's error_code, or a skipped entry's "code".
WRITTEN = re.compile(
    r'\bcode\b\s*=\s*(?:\d+,\s*)?"([a-z_0-9]+)"'
    r'|(?:DicomInputError|ApiError|error_response)\(\s*(?:request,\s*)?\d+,\s*"([a-z_0-9]+)"'
    r'|"error_code"\]\s*=\s*"([a-z_0-9]+)"'
    r'|"code":\s*"([a-z_0-9]+)"'
    r'|"error_code":\s*"([a-z_0-9]+)"',
)


def test_the_readme_shows_the_table() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- error-codes -->\n", 1)[1].split("\n<!-- /error-codes -->", 1)[0]
    assert block == error_code_table()


def test_the_openapi_document_shows_the_table(client: TestClient) -> None:
    description = client.get("/openapi.json").json()["info"]["description"]
    assert error_code_table() in description


def test_the_code_base_writes_no_code_outside_the_table() -> None:
    written: dict[str, str] = {}
    for folder in ("service", "spine_engine", "spine_batch"):
        for path in (REPO / folder).rglob("*.py"):
            for match in WRITTEN.finditer(path.read_text()):
                written[next(g for g in match.groups() if g)] = str(path.relative_to(REPO))
    assert len(written) >= 30, sorted(written)  # the scan finds them (a broken pattern would find none)
    stray = {code: where for code, where in written.items() if code not in ERROR_CODES}
    assert not stray, f"codes missing from ERROR_CODES: {stray}"
    status_codes = re.findall(r'\d{3}: "([a-z_]+)"', (REPO / "service/core/errors.py").read_text())
    assert status_codes and set(status_codes) <= set(ERROR_CODES)  # the codes of Starlette's own errors
