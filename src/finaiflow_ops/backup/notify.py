"""The failure hook: a command run when a backup or prune fails, so that silence is never success.

The command runs with `sh -c` on the machine running finaiflow-ops, with the failure in its
environment: FINAIFLOW_BACKUP_ERROR (the one-line error, never a secret), FINAIFLOW_BACKUP_COMMAND
(create, prune) and FINAIFLOW_BACKUP_DIR, for example
    --notify 'echo "$FINAIFLOW_BACKUP_ERROR" | mail -s "finaiflow backup failed" ops@example.org'
"""

from __future__ import annotations

import os
import subprocess

__all__ = ["notify_failure"]

TIMEOUT = 60.0


def notify_failure(command: str, *, error: str, operation: str, directory: str) -> str:
    """Run the hook; "" when it ran fine, else why it did not (the caller still reports the failure)."""
    env = {**os.environ, "FINAIFLOW_BACKUP_ERROR": error, "FINAIFLOW_BACKUP_COMMAND": operation,
           "FINAIFLOW_BACKUP_DIR": directory}
    try:
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return f"the --notify command did not finish within {TIMEOUT:g} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the --notify command exited {done.returncode}: {last}"
    return ""
