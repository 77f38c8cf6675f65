"""A DICOMweb server as a source: QIDO-RS lists each study's instances, WADO-RS fetches each one when its row is made.

A thin reader over dicomweb-client (the service's own DICOMweb code, service/dicom/dicomweb.py, analyses a
study and stores SEG + SR back; here only reading is needed). Items are keyed `study/series/instance`; the
bytes are fetched by the worker that classifies them (so a Ray actor on another node fetches its own), as
a DICOM Part 10 file that the service's decoder reads like an uploaded one.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from spine_batch.sources import Item

SCHEME = "dicomweb:"
# Objects that are not images: a SEG or SR the service stored back, presentation states, key objects, documents.
NON_IMAGE_MODALITIES = {"SEG", "SR", "PR", "KO", "DOC", "RTSTRUCT", "REG"}
_TAGS = {"series": "0020000E", "instance": "00080018", "modality": "00080060"}


@dataclass(frozen=True)
class DicomwebServer:
    url: str  # the DICOMweb root, e.g. http://pacs:8042/dicom-web
    username: str | None = None
    password: str | None = None
    timeout_s: float = 60.0

    def client(self) -> Any:
        """One client per thread (a requests.Session is not shared between threads)."""
        local = _clients.__dict__.setdefault("by_server", {})
        if self not in local:
            import requests
            from dicomweb_client.api import DICOMwebClient

            session = requests.Session()
            if self.username:
                session.auth = (self.username, self.password or "")
            local[self] = DICOMwebClient(url=self.url, session=session, timeout=self.timeout_s)
        return local[self]


_clients = threading.local()


class PacsError(Exception):
    """A DICOMweb request failed; `code` and `status` as the service's DICOMweb errors say them."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _value(instance: dict[str, Any], tag: str) -> str | None:
    values = instance.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _request(server: DicomwebServer, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    import requests

    try:
        return fn(*args, **kwargs)
    except requests.exceptions.Timeout as exc:
        raise PacsError(504, "pacs_timeout", f"{server.url} did not answer {what} within {server.timeout_s:g} s") from exc
    except requests.exceptions.ConnectionError as exc:
        raise PacsError(502, "pacs_unreachable", f"{server.url} cannot be reached ({what}): {exc}") from exc
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise PacsError(404, "not_found", f"{server.url} has no such object ({what})") from exc
        raise PacsError(502, "pacs_error", f"{server.url} answered {what} with HTTP {status}") from exc
    except requests.exceptions.RequestException as exc:
        raise PacsError(502, "pacs_error", f"the request {what} to {server.url} failed: {exc}") from exc


def dicomweb_items(server: DicomwebServer, study_uids: Iterable[str]) -> Iterator[Item]:
    """Every image instance of each study; a study that cannot be listed is one item whose row says why."""
    for study in study_uids:
        try:
            found = _request(server, f"QIDO-RS for study {study}", server.client().search_for_instances, study)
        except PacsError as exc:
            yield Item(key=study, path=f"{SCHEME}error:{exc.status}:{exc.code}:{exc.message}", study=study)
            continue
        if not found:
            yield Item(key=study, path=f"{SCHEME}error:404:not_found:{server.url} has no instance in study {study}", study=study)
        for instance in found:
            if (_value(instance, _TAGS["modality"]) or "").upper() in NON_IMAGE_MODALITIES:
                continue
            series, sop = _value(instance, _TAGS["series"]), _value(instance, _TAGS["instance"])
            yield Item(key=f"{study}/{series}/{sop}", path=f"{SCHEME}{study}/{series}/{sop}", study=study)


def fetch(server: DicomwebServer, item: Item) -> bytes:
    """The instance as DICOM Part 10 bytes (WADO-RS), or the listing error the item carries."""
    from pydicom import dcmwrite

    ref = item.path[len(SCHEME) :]
    if ref.startswith("error:"):
        _, status, code, message = ref.split(":", 3)
        raise PacsError(int(status), code, message)
    study, series, sop = ref.split("/")
    dataset = _request(server, f"WADO-RS for {ref}", server.client().retrieve_instance, study, series, sop)
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def read_study_uids(text: str) -> list[str]:
    """`--studies`: comma-separated UIDs, or @FILE with one UID a line."""
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [uid.strip() for uid in text.split(",") if uid.strip()]
