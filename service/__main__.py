"""`spine-serve` / `python -m service`: run the service with uvicorn on the settings' host and port."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from service.core.config import Settings
from service.main import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spine-serve", description="Serve the spine-xray models (settings: SPINE_* variables)")
    parser.add_argument("--host", help="overrides SPINE_HOST")
    parser.add_argument("--port", type=int, help="overrides SPINE_PORT")
    parser.add_argument("--models-dir", type=Path, help="overrides SPINE_MODELS_DIR")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "models_dir": args.models_dir}.items() if v is not None}
    settings = Settings(**overrides)
    app = create_app(settings)
    # One worker process per replica: sessions are shared between requests inside it; scale with replicas.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep our JSON logging
        access_log=False,  # the middleware logs one line per request
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
