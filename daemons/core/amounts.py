"""The one reading of a u128 amount: integer base units as a decimal string on the wire.

Every peer quoteloop reads sends amounts in this form: the relay's quote requests
(docs/near-intents-relay.md §3), the verifier's balance views (docs/verifier.md §9), the POA
bridge (docs/poa-bridge.md §2) and quoteloop's own events (docs/design.md §3).

`parse_u128(value)` takes a string of ASCII decimal digits only: no sign (so no leading `+` or
`-`), no whitespace, no `_`, no decimal point or exponent, no non-ASCII digits; leading zeros
are allowed. The value is in [0, 2**128 - 1]; zero is allowed unless the caller passes
`positive=True`. A JSON integer (an `int`, never a `bool`) is refused unless the caller passes
`allow_int=True`, for a peer whose integers are exact; a float is always refused, since an amount
that went through a float has already lost precision. Anything else raises `ValueError` (never
`TypeError`, so a pydantic validator turns it into a validation error) with the reason.
"""

from __future__ import annotations

U128_MAX = 2**128 - 1
_U128_DIGITS = len(str(U128_MAX))  # 39


def parse_u128(value: object, *, positive: bool = False, allow_int: bool = False) -> int:
    """`value` as a u128 amount (module docstring); `ValueError` saying why when it is not one."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"amount must be an integer in base units (a decimal string), never {type(value).__name__}")
    if isinstance(value, int) and allow_int:
        number = value
    elif isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise ValueError(f"amount must be a string of decimal digits, got {value!r}")
        significant = value.lstrip("0")
        if len(significant) > _U128_DIGITS:  # out of range whatever the digits: not worth an int()
            raise ValueError("amount out of u128 range: above 2^128-1")
        number = int(significant) if significant else 0
    else:
        raise ValueError(f"amount must be a decimal string, got {type(value).__name__}")
    if number < 0:
        raise ValueError("amount must not be negative")
    if number > U128_MAX:
        raise ValueError("amount out of u128 range: above 2^128-1")
    if positive and number == 0:
        raise ValueError("amount must be positive, got 0")
    return number
