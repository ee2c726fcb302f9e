"""A chain transaction hash as quoteloop compares it.

The operator types the hash of a transfer into the deposit address (liquidity-manager records it);
the POA bridge lists the deposits it saw with their hashes (docs/poa-bridge.md §4). Both daemons
that match one against the other, liquidity-manager (a funding and the bridge's deposit, and a
duplicate funding) and inventory-sync (a funding and the bridge's deposit, for its pending
inflows and its reconciliation), normalise both sides with `normalize_tx_hash` first, so the same
transfer has one name however it was typed.
"""

from __future__ import annotations

import string

_HEX = frozenset(string.hexdigits)


def normalize_tx_hash(tx_hash: str) -> str:
    """Trimmed; a hex hash (EVM `0x…`, a bitcoin txid) in lower case, its `0x` or `0X` prefix as
    `0x`; anything else (e.g. a base58 hash) as typed."""
    text = tx_hash.strip()
    prefixed = text[:2] in ("0x", "0X")
    body = text[2:] if prefixed else text
    if body and all(c in _HEX for c in body):
        return ("0x" if prefixed else "") + body.lower()
    return text
