"""The one exception type for bad user input, and the value checks that raise it.

``UserError`` is input the user must change; ``sedsft`` prints its message as one line and exits 2.
Every other exception is a bug and keeps its traceback. Configs validate their fields where they are
built (``__post_init__``), with the checks below, so the CLI and Python callers get the same errors:

    n = check_count("n", self.n)                                  # an int >= 1 (never a bool)
    check_number("temperature", self.temperature, low=0)          # finite, >= 0 (NaN and inf refused)
    check_number("top_p", self.top_p, low=0, high=1, open_low=True)   # in (0, 1]

Messages name the field as its flag spells it and say what is allowed: ``temperature must be a
finite number >= 0, got nan``.
"""

from __future__ import annotations

import math


class UserError(ValueError):
    """Input the user must change (a path, a field, an option value). The message says what to change."""


def check_number(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    integer: bool = False,
    allow_none: bool = False,
):
    """``value`` if it is a finite number in the given range, else a UserError naming ``name``."""
    if value is None and allow_none:
        return None
    kind = "an integer" if integer else "a finite number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if open_low else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if open_high else '<='} {high:g}")
    if low is not None and high is not None:
        wanted = f"{kind} in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    else:
        wanted = " ".join([kind, *bounds])
    unset = " (or unset)" if allow_none else ""
    bad = UserError(f"{name} must be {wanted}{unset}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if integer and not (isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())):
        raise bad
    if not math.isfinite(value):
        raise bad
    if low is not None and (value <= low if open_low else value < low):
        raise bad
    if high is not None and (value >= high if open_high else value > high):
        raise bad
    return int(value) if integer else value


def check_count(name: str, value, *, minimum: int = 1, allow_none: bool = False):
    """``value`` if it is an integer >= ``minimum`` (a count, a size, a number of steps)."""
    return check_number(name, value, low=minimum, integer=True, allow_none=allow_none)


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_finite_fields(config, *, skip: tuple[str, ...] = ()) -> None:
    """Refuse NaN and infinity in every float field of a dataclass (e.g. TRL's training arguments)."""
    import dataclasses

    for f in dataclasses.fields(config):
        value = getattr(config, f.name, None)
        if f.name not in skip and isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{f.name} must be a finite number, got {value!r}")
