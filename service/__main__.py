"""`spine-serve` / `python -m service`: run the service with uvicorn on the settings' host and port."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

import uvicorn

from service.core.config import Settings
from service.main import create_app

M_ARENA_MAX = -8  # glibc mallopt parameter
DEFAULT_MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, unless MALLOC_ARENA_MAX is set (then glibc already applied it).

    glibc gives each new thread its own arena (up to 8 per core); with the request threads of the server the
    freed memory of decoded images and masks fragments across them and RSS creeps up for thousands of requests
    (the soak measured +6.6 % from request 1,000 to 10,000 with the default, +1.1 % with 2 arenas, at the same
    throughput: docs/reliability.md). Called before any thread starts. False where not glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spine-serve", description="Serve the spine-xray models (settings: SPINE_* variables)")
    parser.add_argument("--host", help="overrides SPINE_HOST")
    parser.add_argument("--port", type=int, help="overrides SPINE_PORT")
    parser.add_argument("--models-dir", type=Path, help="overrides SPINE_MODELS_DIR")
    args = parser.parse_args(argv)
    limited = limit_malloc_arenas()
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "models_dir": args.models_dir}.items() if v is not None}
    settings = Settings(**overrides)
    app = create_app(settings)
    logging.getLogger(__name__).debug("malloc arenas capped at %s: %s", DEFAULT_MALLOC_ARENAS, limited)
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
