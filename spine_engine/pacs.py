"""A DICOMweb server (QIDO-RS, WADO-RS, STOW-RS) as the service's analyze route and spine-batch's source reach it.

One client, one set of error codes: transport and HTTP failures become `DicomInputError`s (a `SpineError`):
502 `pacs_unreachable`, `pacs_error` or `pacs_bad_answer`, 504 `pacs_timeout`, 404 `study_not_found`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from spine_engine.errors import DicomInputError
from spine_engine.settings import EngineSettings

T = TypeVar("T")


@dataclass(frozen=True)
class DicomwebServer:
    url: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0

    def client(self) -> DICOMwebClient:
        session = create_session_from_user_pass(self.username, self.password or "") if self.username else requests.Session()
        client = DICOMwebClient(url=self.url, session=session, timeout=self.timeout_s)
        # dicomweb-client retries 5 times with exponential back-off (30 s) by default; the caller of analyze decides.
        client.set_http_retry_params(retry=False)
        return client

    def call(self, what: str, fn: Callable[..., T], *args: Any, not_found: str | None = None, **kwargs: Any) -> T:
        """Run one DICOMweb request; transport and HTTP failures become DicomInputErrors with a clear code."""
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.Timeout as exc:
            raise DicomInputError(
                504, "pacs_timeout", f"the DICOMweb server {self.url} did not answer {what} within {self.timeout_s:g} s"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise DicomInputError(
                502, "pacs_unreachable", f"the DICOMweb server {self.url} cannot be reached ({what}): {exc}"
            ) from exc
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status == 404 and not_found is not None:
                raise DicomInputError(404, "study_not_found", not_found) from exc
            raise DicomInputError(
                502, "pacs_error", f"the DICOMweb server {self.url} answered {what} with HTTP {status}", pacs_status=status
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise DicomInputError(502, "pacs_error", f"the DICOMweb request ({what}) to {self.url} failed: {exc}") from exc
        except (ValueError, KeyError) as exc:  # an answer dicomweb-client cannot parse (JSON, multipart)
            raise DicomInputError(
                502, "pacs_bad_answer", f"the DICOMweb server {self.url} answered {what} unreadably: {exc}"
            ) from exc

    @classmethod
    def from_settings(cls, settings: EngineSettings, url: str | None = None) -> DicomwebServer:
        """The server at `url` (default SPINE_DICOMWEB_URL) with the settings' credentials and timeout."""
        password = settings.dicomweb_password.get_secret_value() if settings.dicomweb_password else None
        return cls(
            (url or settings.dicomweb_url or "").rstrip("/"), settings.dicomweb_username, password, settings.dicomweb_timeout_s
        )
