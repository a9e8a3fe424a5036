"""The one user-facing error type, and the problem record the pre-flight check returns.

A `UserError` names what is wrong (message), where (a config field or a file) and how to fix it.
The CLI prints it as one block and exits 2; the page shows it beside the field. No traceback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Problem:
    message: str
    field: str | None = None
    file: str | None = None
    fix: str | None = None
    severity: str = "error"  # "error" | "warning"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        where = []
        if self.field:
            where.append(f"field '{self.field}'")
        if self.file:
            where.append(f"file '{self.file}'")
        head = f"{self.severity.upper()}: {self.message}"
        if where:
            head += f"  [{', '.join(where)}]"
        if self.fix:
            head += f"\n  fix: {self.fix}"
        return head


class UserError(Exception):
    """A problem the user can fix: carries field/file, a plain message and the fix."""

    def __init__(self, message: str, *, field: str | None = None, file: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.problem = Problem(message=message, field=field, file=file, fix=fix)

    @property
    def message(self) -> str:
        return self.problem.message

    @property
    def field(self) -> str | None:
        return self.problem.field

    @property
    def file(self) -> str | None:
        return self.problem.file

    @property
    def fix(self) -> str | None:
        return self.problem.fix

    def format(self) -> str:
        return self.problem.format()
