"""A DICOMweb server as a source: QIDO-RS lists each study's instances, WADO-RS fetches each one when its row is made.

Reads through the same DICOMweb client as the service (spine_engine/pacs.py: one client, the same error
codes `pacs_unreachable`, `pacs_timeout`, `pacs_error`, …, as DicomInputError). Items are keyed `study/series/instance`; the
bytes are fetched by the worker that classifies them (so a Ray actor on another node fetches its own), as
a DICOM Part 10 file that the service's decoder reads like an uploaded one.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

from spine_batch.sources import Item
from spine_engine.errors import DicomInputError
from spine_engine.pacs import DicomwebServer

SCHEME = "dicomweb:"
# Objects that are not images: a SEG or SR the service stored back, presentation states, key objects, documents.
NON_IMAGE_MODALITIES = {"SEG", "SR", "PR", "KO", "DOC", "RTSTRUCT", "REG"}
_TAGS = {"series": "0020000E", "instance": "00080018", "modality": "00080060"}


def _value(instance: dict[str, Any], tag: str) -> str | None:
    values = instance.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def dicomweb_items(server: DicomwebServer, study_uids: Iterable[str]) -> Iterator[Item]:
    """Every image instance of each study; a study that cannot be listed is one item whose row says why."""
    for study in study_uids:
        try:
            found = server.call(
                f"QIDO-RS for study {study}",
                server.client().search_for_instances,
                study,
                not_found=f"{server.url} has no study {study}",
            )
        except DicomInputError as exc:
            yield Item(key=study, path=f"{SCHEME}error:{exc.status_code}:{exc.code}:{exc.message}", study=study)
            continue
        if not found:
            missing = f"{server.url} has no instance in study {study}"
            yield Item(key=study, path=f"{SCHEME}error:404:study_not_found:{missing}", study=study)
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
        raise DicomInputError(int(status), code, message)
    study, series, sop = ref.split("/")
    dataset = server.call(f"WADO-RS for {ref}", server.client().retrieve_instance, study, series, sop)
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def read_study_uids(text: str) -> list[str]:
    """`--studies`: comma-separated UIDs, or @FILE with one UID a line."""
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [uid.strip() for uid in text.split(",") if uid.strip()]
