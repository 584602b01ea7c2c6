"""How a failed command in the database container is reported: one line of message, and the
service, container and redacted stderr tail as the error's fields."""

from __future__ import annotations

from finaiflow_ops.backup.database import SERVICE, Database
from finaiflow_ops.backup.errors import BackupFailed
from finaiflow_ops.errors import RestoreFailed

SECRET = "Sup3rSecretValue"
DB = Database(None, "0123abcd", "finaiflow", "finaiflow_db", "postgres of p on local://",  # type: ignore[arg-type]
              env={"POSTGRES_PASSWORD": SECRET})


def test_a_failed_command_names_the_service_and_container_with_the_redacted_stderr_tail() -> None:
    stderr = "".join(f"line {n}\n" for n in range(20))
    stderr += f"FATAL:  password authentication failed ({SECRET})\n\n"
    error = DB.failed(BackupFailed, "pg_dump in postgres of p on local://", 1, stderr)
    assert isinstance(error, BackupFailed)
    assert error.message == ("pg_dump in postgres of p on local:// failed (exit 1): "
                             "FATAL:  password authentication failed (***)")
    assert (error.service, error.container) == (SERVICE, "0123abcd") == ("postgres", "0123abcd")
    tail = error.log_tail.splitlines()
    assert tail[0] == "line 11" and tail[-1].endswith("(***)") and len(tail) == 10
    assert SECRET not in error.message + error.log_tail


def test_the_error_kind_and_hint_are_the_callers() -> None:
    error = DB.failed(RestoreFailed, "pg_restore into x", 127, "Error: No such container: 0123abcd",
                      hint="the live database was not touched")
    assert isinstance(error, RestoreFailed) and error.hint == "the live database was not touched"
    assert "the database container is gone" in error.message
    assert error.container == "0123abcd"


def test_an_error_without_output_still_names_the_container() -> None:
    error = DB.error(BackupFailed, "pg_dump timed out after 5 s in postgres of p on local://")
    assert (error.service, error.container, error.log_tail) == ("postgres", "0123abcd", "")
