"""Hard ceilings: the limits no control API can raise, from a root-owned file read at start.

The file (`QL_CEILINGS_FILE`, default `/etc/quoteloop/ceilings.toml`) must be a regular file
owned by root and writable by nobody else (no group or other write bit), so that neither a
daemon's own user nor an operator with a control socket can change it; it is opened once and
checked on that open descriptor (no symlink followed, no window between check and read). Amounts
are in asset units (decimal strings), per asset symbol of the active pair:

    min_edge_pct = "1.0"                    # gross edge below this is never answered
    max_notional_eure_per_answer = "50"     # the EURe side of one answer
    max_price_age_ms = 5000                 # reference price older than this: no answer
    max_inventory_age_ms = 30000            # inventory snapshot older than this: no answer

    [max_give_per_answer]                   # what one answer may give
    BTC = "0.001"
    EURe = "50"

    [max_live_exposure]                     # the sum given by every answer still able to execute
    BTC = "0.01"
    EURe = "500"

strategy-engine refuses `PUT /threshold` and `PUT /limits` values beyond them and will not start
with settings beyond them; trade-executor checks every command against them on its own
(`trade_executor/gates.py`). Lowering a limit below a ceiling is always allowed.
"""

from __future__ import annotations

import os
import stat
import tomllib
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemons.core.assets import ActivePair
from daemons.core.edge import DECIMAL_CTX

DEFAULT_PATH = Path("/etc/quoteloop/ceilings.toml")


class CeilingsError(Exception):
    """Why the ceilings file cannot be used, in one line naming the file."""


class Ceilings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_edge_pct: Decimal = Field(gt=-100, le=100)
    max_notional_eure_per_answer: Decimal = Field(gt=0)
    max_price_age_ms: int = Field(ge=1)
    max_inventory_age_ms: int = Field(ge=1)
    max_give_per_answer: dict[str, Decimal]  # asset symbol -> units
    max_live_exposure: dict[str, Decimal]  # asset symbol -> units

    @field_validator("max_give_per_answer", "max_live_exposure")
    @classmethod
    def _positive(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for symbol, amount in value.items():
            if amount <= 0:
                raise ValueError(f"{symbol} must be positive, got {amount}")
        return value

    def _base(self, table: dict[str, Decimal], name: str, pair: ActivePair, asset_id: str) -> int:
        asset = pair.asset(asset_id)
        units = table.get(asset.symbol)
        if units is None:
            raise CeilingsError(f"ceilings: [{name}] has no {asset.symbol}")
        return int(units.scaleb(asset.decimals, DECIMAL_CTX))

    def give_per_answer(self, pair: ActivePair, asset_id: str) -> int:
        """Base units of `asset_id` one answer may give at most."""
        return self._base(self.max_give_per_answer, "max_give_per_answer", pair, asset_id)

    def live_exposure(self, pair: ActivePair, asset_id: str) -> int:
        """Base units of `asset_id` all answers still able to execute may give together."""
        return self._base(self.max_live_exposure, "max_live_exposure", pair, asset_id)

    def check_pair(self, pair: ActivePair) -> None:
        """Both tables name every asset of the pair (else the file is refused at start)."""
        for asset_id in pair.token_ids:
            self.give_per_answer(pair, asset_id)
            self.live_exposure(pair, asset_id)


def _open_checked(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CeilingsError(f"ceilings file {path} does not exist") from None
    except OSError as exc:  # ELOOP: a symlink; EACCES
        raise CeilingsError(f"ceilings file {path} cannot be opened ({exc.strerror}; a symlink is refused)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CeilingsError(f"ceilings file {path} is not a regular file")
        if st.st_uid != 0:
            raise CeilingsError(f"ceilings file {path} is owned by uid {st.st_uid}; it must be owned by root")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise CeilingsError(
                f"ceilings file {path} has mode {mode:04o}; group or others may write it (0644 or 0640, owned by root)"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_ceilings(path: Path, pair: ActivePair) -> Ceilings:
    raw = _open_checked(path)
    try:
        data = tomllib.loads(raw.decode())
        ceilings = Ceilings.model_validate(data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CeilingsError(f"ceilings file {path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise CeilingsError(f"ceilings file {path}: {problems}") from None
    ceilings.check_pair(pair)
    return ceilings
