"""finaiflow_ops: deploy primitives for FinaiFlow (FastAPI + nginx + Redis + PostgreSQL on Docker)."""

from finaiflow_ops.errors import (
    CheckFailed,
    CommandFailed,
    EnvFileError,
    HealthTimeout,
    OpsError,
    TargetUnreachable,
    UsageError,
)
from finaiflow_ops.stack import ContainerInfo, ServiceStatus, Stack, StackStatus
from finaiflow_ops.target import CommandResult, Target

__all__ = [
    "CheckFailed",
    "CommandFailed",
    "CommandResult",
    "ContainerInfo",
    "EnvFileError",
    "HealthTimeout",
    "OpsError",
    "ServiceStatus",
    "Stack",
    "StackStatus",
    "Target",
    "TargetUnreachable",
    "UsageError",
]
