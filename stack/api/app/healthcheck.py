"""Docker HEALTHCHECK probe: exit 0 only when /health answers 200.

Uses the standard library because neither base image is guaranteed to have curl.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

URL = "http://127.0.0.1:8000/health"
# Under the HEALTHCHECK --timeout of 3 s, above /health's own 2 s per-check budget.
TIMEOUT_SECONDS = 2.5


def main() -> int:
    try:
        with urllib.request.urlopen(URL, timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"health: HTTP {error.code}", file=sys.stderr)
    except OSError as error:
        print(f"health: {type(error).__name__}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
