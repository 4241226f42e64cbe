"""Argument checks shared by the HIFA statistics (dsr, cpcv, permutation, pbo): one message for a bad
count."""

from __future__ import annotations

import numpy as np

from flagcore.errors import FlagcoreError


def positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) of at least ``minimum``.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : object
        What the caller passed.
    minimum : int, default 1

    Returns
    -------
    int

    Raises
    ------
    FlagcoreError
        When ``value`` is not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FlagcoreError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
