"""`python -m service.healthcheck`: exit 0 when the service in this container is ready, 1 otherwise.

The Docker HEALTHCHECK and the compose healthcheck run it inside the container, where it reads the same
SPINE_* settings as the server: the port, and with SPINE_API_KEYS set the first key, so readiness stays
protected by the keys and the probe still passes.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from service.core.config import Settings

READY_PATH = "/health/ready"


def check(settings: Settings, host: str = "127.0.0.1", timeout_s: float = 4.0) -> tuple[bool, str]:
    """(ready, what was seen) for GET /health/ready on this host."""
    headers = {"X-API-Key": settings.api_keys[0].get_secret_value()} if settings.api_keys else {}
    request = urllib.request.Request(f"http://{host}:{settings.port}{READY_PATH}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:  # 503 not ready, 401 wrong key
        return False, f"HTTP {exc.code}"
    except OSError as exc:  # nothing listening, timeout
        return False, f"unreachable: {exc}"


def main() -> int:
    ready, seen = check(Settings())
    print(f"{READY_PATH}: {seen}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
