"""The treasury file: strict validation at load, and the refusals a funding or withdrawal request
gets for an unknown asset, an unsupported route, an unknown chain or an unlisted wallet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemons.core.assets import EURE_ID, NBTC_ID, POA_BTC_ID
from daemons.liquidity_manager.treasury import (
    RouteRefused,
    TreasuryFileError,
    address_fits_chain,
    load_treasury,
    parse_treasury,
)

GNOSIS_WALLET = "0x" + "ab" * 20
BTC_WALLET = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"

TOML = f"""
[[assets]]
asset_id = "{EURE_ID}"
chains = ["eth:100"]

[[assets]]
asset_id = "{POA_BTC_ID}"
chains = ["btc:mainnet"]

[[wallets]]
label = "gnosis-treasury"
chain = "eth:100"
address = "{GNOSIS_WALLET}"

[[wallets]]
label = "btc-cold"
chain = "btc:mainnet"
address = "{BTC_WALLET}"
purpose = "withdrawal"

[[wallets]]
label = "btc-hot"
chain = "btc:mainnet"
address = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
purpose = "funding"
"""


def _config():  # type: ignore[no-untyped-def]
    return parse_treasury(TOML, "toml")


def test_toml_and_json_files_load_the_same_config(tmp_path: Path) -> None:
    toml_path = tmp_path / "treasury.toml"
    toml_path.write_text(TOML)
    json_path = tmp_path / "treasury.json"
    json_path.write_text(json.dumps(_config().model_dump(mode="json")))
    assert load_treasury(toml_path) == load_treasury(json_path) == _config()
    assert _config().chains == ["btc:mainnet", "eth:100"]
    assert [(r.asset_id, r.chain) for r in _config().routes] == [(EURE_ID, "eth:100"), (POA_BTC_ID, "btc:mainnet")]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f'[[assets]]\nasset_id = "{NBTC_ID}"\nchains = ["btc:mainnet"]', "Omni bridge"),
        ('[[assets]]\nasset_id = "nep141:wrap.near"\nchains = ["near:mainnet"]', "unknown asset"),
        (f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:1"]', "funded through chain 'eth:100'"),
        (f'[[assets]]\nasset_id = "{EURE_ID}"', "list its chains"),
        (f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100", "eth:100"]', "listed twice"),
        ("assets = []", "at least 1"),
        (f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\nsurprise = 1', "Extra inputs"),
        (
            f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n[[wallets]]\nlabel = "w"\nchain = "eth:100"\n'
            'address = "0x1234"',
            "not an address on chain",
        ),
        (
            f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n'
            '[[wallets]]\nlabel = "w"\nchain = "btc:mainnet"\n'
            f'address = "{BTC_WALLET}"',
            "not a treasury chain",
        ),
        (
            f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n'
            + (f'[[wallets]]\nlabel = "w"\nchain = "eth:100"\naddress = "{GNOSIS_WALLET}"\n') * 2,
            "unique",
        ),
        (
            f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n'
            '[[wallets]]\nlabel = "Bad Label"\nchain = "eth:100"\n'
            f'address = "{GNOSIS_WALLET}"',
            "wallet label",
        ),
        (
            f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]\n[[wallets]]\nlabel = "w"\nchain = "eth:100"\n'
            f'address = "{GNOSIS_WALLET}"\nassets = ["{POA_BTC_ID}"]',
            "not a treasury asset on eth:100",
        ),
        ("[[assets]\n", "not valid TOML"),
    ],
)
def test_invalid_files_are_refused_naming_the_problem(text: str, needle: str) -> None:
    with pytest.raises(TreasuryFileError, match=needle):
        parse_treasury(text, "toml")


def test_a_missing_file_or_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TreasuryFileError, match="not set"):
        load_treasury(None)
    with pytest.raises(TreasuryFileError, match="cannot read"):
        load_treasury(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("asset_id", "chain", "code", "needle"),
    [
        (NBTC_ID, None, "unsupported_route", "Omni bridge"),
        (NBTC_ID, "btc:mainnet", "unsupported_route", "Omni bridge"),
        ("nep141:wrap.near", None, "unknown_asset", "not in the asset registry"),
        (EURE_ID, "sol:mainnet", "unknown_chain", "unknown chain 'sol:mainnet'"),
        (EURE_ID, "btc:mainnet", "unsupported_route", "funded through chain 'eth:100', not 'btc:mainnet'"),
    ],
)
def test_routes_are_refused_with_a_reason(asset_id: str, chain: str | None, code: str, needle: str) -> None:
    with pytest.raises(RouteRefused) as caught:
        _config().route(asset_id, chain)
    assert caught.value.code == code and needle in caught.value.reason


def test_a_route_missing_from_the_file_is_refused() -> None:
    only_eure = parse_treasury(f'[[assets]]\nasset_id = "{EURE_ID}"\nchains = ["eth:100"]', "toml")
    with pytest.raises(RouteRefused) as caught:
        only_eure.route(POA_BTC_ID)
    assert caught.value.code == "not_in_treasury"
    assert only_eure.route(EURE_ID).chain == "eth:100"


def test_withdrawal_destinations_are_labelled_wallets_only() -> None:
    config = _config()
    eure, btc = config.route(EURE_ID), config.route(POA_BTC_ID)
    assert config.destination(eure, "gnosis-treasury", None).address == GNOSIS_WALLET
    # by address, case-insensitively for EVM
    assert config.destination(eure, None, GNOSIS_WALLET.upper().replace("0X", "0x")).label == "gnosis-treasury"
    assert config.destination(btc, "btc-cold", BTC_WALLET).label == "btc-cold"
    for label, address, code in [
        (None, "0x" + "cd" * 20, "unknown_wallet"),  # not listed
        ("nope", None, "unknown_wallet"),
        ("gnosis-treasury", "0x" + "cd" * 20, "wallet_mismatch"),  # label and address disagree
        ("btc-hot", None, "wallet_mismatch"),  # a funding-only wallet
        (None, None, "unknown_wallet"),
    ]:
        with pytest.raises(RouteRefused) as caught:
            config.destination(btc if label and label.startswith("btc") else eure, label, address)
        assert caught.value.code == code, (label, address)
    with pytest.raises(RouteRefused, match="not a withdrawal destination"):
        config.destination(btc, "gnosis-treasury", None)  # another chain's wallet


def test_funding_sources_are_optional_but_must_fit() -> None:
    config = _config()
    btc = config.route(POA_BTC_ID)
    assert config.funding_source(btc, None) is None
    assert config.funding_source(btc, "btc-hot").label == "btc-hot"  # type: ignore[union-attr]
    with pytest.raises(RouteRefused, match="not a funding wallet"):
        config.funding_source(btc, "btc-cold")
    with pytest.raises(RouteRefused, match="no wallet labelled"):
        config.funding_source(btc, "ghost")


@pytest.mark.parametrize(
    ("chain", "address", "ok"),
    [
        ("eth:100", GNOSIS_WALLET, True),
        ("eth:100", GNOSIS_WALLET[:-1], False),
        ("eth:100", "0x" + "g" * 40, False),
        ("btc:mainnet", BTC_WALLET, True),
        ("btc:mainnet", BTC_WALLET.upper(), True),
        ("btc:mainnet", "bc1QAR0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", False),  # mixed case
        ("btc:mainnet", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", True),
        ("btc:mainnet", "0x" + "ab" * 20, False),
    ],
)
def test_address_shapes(chain: str, address: str, ok: bool) -> None:
    assert address_fits_chain(chain, address) is ok
