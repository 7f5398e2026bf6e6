"""JSON in and out as the standard has it: no NaN or Infinity either way, errors naming the file.

Python's json module writes a non-finite float as a bare `NaN`, which no other JSON reader
accepts, and reads it back without complaint. Every JSON cnncli writes goes through `dumps`, and
every JSON it reads from a user (a bundle) through `loads`.
"""

from __future__ import annotations

import json
from typing import Any

from cnncli.errors import CnncliError


def dumps(value: Any, where: str, **options: Any) -> str:
    """`json.dumps` that refuses NaN and infinities, naming `where` (a file, an output) in the error."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError as error:
        raise CnncliError(f"{where}: would hold a number that is not finite (NaN or infinity), which JSON "
                          f"cannot ({error})") from None


def loads(text: str, where: str) -> Any:
    """`json.loads` that refuses NaN and Infinity (not JSON) and names `where` in every error."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # a JSONDecodeError, or NaN / Infinity
        raise CnncliError(f"{where}: not valid JSON ({error})") from None
    except RecursionError:
        raise CnncliError(f"{where}: nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
