"""The project's exceptions, in one small tree.

    ExportError                      base of everything raised on purpose
    ├── SettingsError                a required app setting is missing or malformed
    ├── DefinitionError              an export definition is invalid (names the field)
    ├── InvalidNameError             an export name or run id is malformed (names the field)
    ├── NotFoundError                no such export definition or run
    ├── InputError                   the segment cannot be read (names file, line, field)
    │   ├── SnapshotNotFoundError    no snapshot folder for the segment
    │   └── SnapshotChangedError     the snapshot changed while a run read it
    ├── ConsentError                 the connection's privacy consent is not given
    ├── SecretError                  the Klaviyo key could not be fetched (missing, denied)
    ├── KlaviyoError                 Klaviyo answered with an error
    │   ├── KlaviyoRetriableError    429, 5xx, timeouts, dropped connections
    │   └── KlaviyoFatalError        400/401/403/404...: stop the run with Klaviyo's detail
    └── RunConflictError             another run of the same export holds the lock

A rejected row is not an exception: it is counted and reported by the run.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "ConsentError",
    "DefinitionError",
    "ExportError",
    "InputError",
    "InvalidNameError",
    "KlaviyoError",
    "KlaviyoFatalError",
    "KlaviyoRetriableError",
    "NotFoundError",
    "RunConflictError",
    "SecretError",
    "SettingsError",
    "SnapshotChangedError",
    "SnapshotNotFoundError",
    "first_cause",
]


class ExportError(Exception):
    """Base class of the errors this project raises on purpose."""


class SettingsError(ExportError):
    """A required app setting is missing or malformed."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"setting {name}: {message}")
        self.name = name


class DefinitionError(ExportError):
    """An export definition is invalid; ``field`` is a dotted path such as ``mapping.email``."""

    def __init__(self, field: str, message: str, *, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")
        self.field = field
        self.detail = message
        self.source = source


class InvalidNameError(ExportError):
    """An export name or run id that the app would never make; ``field`` says which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class NotFoundError(ExportError):
    """No export definition (or run) of that name."""


class InputError(ExportError):
    """The segment's files cannot be used as they are."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ""
        if file:
            where = file if line is None else f"{file}:{line}"
            where += ": "
        if field:
            where += f"field {field!r}: "
        super().__init__(f"{where}{message}")
        self.file = file
        self.line = line
        self.field = field
        self.detail = message


class SnapshotNotFoundError(InputError):
    """No ``YYYY/MM/DD/HHMM`` snapshot folder holds data files for the segment."""


class SnapshotChangedError(InputError):
    """Files of the snapshot were added, rewritten or removed while a run read it.

    The run finished what it had listed; ``report`` is its report (with the change), and
    the export stays due so that the next run reads the snapshot as it is now.
    """

    def __init__(
        self, message: str, *, file: str | None = None, report: dict | None = None
    ) -> None:
        super().__init__(message, file=file)
        self.report = report


class ConsentError(ExportError):
    """The export's connection has not recorded the privacy consent."""


class SecretError(ExportError):
    """The Klaviyo API key could not be obtained."""


class KlaviyoError(ExportError):
    """Klaviyo (or the network in front of it) answered with an error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: list[dict] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []
        self.method = method
        self.url = url


class KlaviyoRetriableError(KlaviyoError):
    """Worth another try, after ``retry_after`` seconds when Klaviyo said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class KlaviyoFatalError(KlaviyoError):
    """Retrying cannot help (bad key, missing list, malformed request)."""


class RunConflictError(ExportError):
    """Another run of the same export is in progress."""

    def __init__(self, export: str, run_id: str | None) -> None:
        super().__init__(f"export {export!r} already has a run in progress ({run_id or 'unknown'})")
        self.export = export
        self.run_id = run_id


def first_cause(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a task group (what callers handle), not the group itself."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_cause(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group
