"""Model configs to and from plain dicts: the one way FLAG-TRADER and CGDT configs are stored.

A config is a frozen dataclass; its dict is what a checkpoint header holds as JSON. Reading one
back refuses fields the dataclass does not have, so a file from another version says so in one line.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import ClassVar, TypeVar

from flagcore.errors import FlagcoreError

C = TypeVar("C", bound="ConfigDict")


class ConfigDict:
    """Mixin for config dataclasses: ``to_dict`` and ``from_dict``; errors start with ``ERROR_PREFIX``."""

    ERROR_PREFIX: ClassVar[str] = "config"

    def to_dict(self) -> dict:
        """The config as a dict of plain values, field by field."""
        return asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass

    @classmethod
    def from_dict(cls: type[C], d: dict) -> C:
        """The config of ``d``; unknown fields are refused, missing ones take their defaults.

        Parameters
        ----------
        d : field name -> value, as ``to_dict`` gives.

        Returns
        -------
        The config, validated by the dataclass's ``__post_init__``.
        """
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlagcoreError(f"{cls.ERROR_PREFIX}: unknown field(s) {', '.join(unknown)}")
        return cls(**d)
