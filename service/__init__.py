"""The spine-xray inference service.

Kept import-free on purpose: `spine_engine` is imported by the evaluation CLI, which must
not pay for (or depend on) the HTTP stack. The FastAPI app lives in `service.main`.
"""
