"""What the oldest Python we run on (3.9: RHEL 9, Debian 11) lacks, in one place."""

from __future__ import annotations

import enum
import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum as StrEnum  # novermin
else:  # pragma: no cover - exercised by the Debian 11 run

    class StrEnum(str, enum.Enum):
        """enum.StrEnum: members are strings, and str() and format() give the value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


def load_toml(text: str) -> dict[str, object]:
    """tomllib (3.11) or, before it, tomli, which it came from. ValueError on bad TOML."""
    if sys.version_info >= (3, 11):
        import tomllib  # novermin
    else:  # pragma: no cover
        import tomli as tomllib
    data: dict[str, object] = tomllib.loads(text)
    return data
