-- migrate:up

-- liquidity-manager's own working state. The append-only history of every transition stays in
-- `liquidity_actions` (written by history-writer from `ops.liquidity_action`); these tables are
-- what the daemon must know synchronously and across restarts:
--
-- * funding attempts, unique by (chain, tx_hash), so the same transfer recorded twice is refused
--   as a duplicate atomically, even across restarts and before history-writer has caught up;
-- * the withdrawal ledger, written before anything is sent (the signed intent and its nonce), so
--   a restart resolves an in-flight withdrawal by asking the venue, never by re-signing;
-- * the deposit addresses the bridge issued, and the withdrawal freeze, which latches;
-- * an outbox: each transition's event is committed with the state change and published from
--   here, so no transition is lost when Kafka is away (a re-publish keeps its event_id, which
--   history-writer stores once).

CREATE TABLE liquidity_outbox (
    seq bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    topic text NOT NULL,
    key text NOT NULL,
    event bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX liquidity_outbox_unpublished_idx ON liquidity_outbox (seq) WHERE published_at IS NULL;

CREATE TABLE liquidity_deposit_addresses (
    account_id text NOT NULL,
    chain text NOT NULL,
    address text NOT NULL,
    memo text,
    liquidity_action_id text NOT NULL,
    issued_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, chain)
);

CREATE TABLE liquidity_funding (
    liquidity_action_id text PRIMARY KEY,
    account_id text NOT NULL,
    asset_id text NOT NULL,
    chain text NOT NULL,
    amount numeric(39, 0) NOT NULL CHECK (amount > 0),
    tx_hash text NOT NULL,
    deposit_address text,
    wallet_label text,
    operator text,
    note text,
    stage text NOT NULL CHECK (stage IN ('recorded', 'notified', 'seen', 'credited', 'failed')),
    recorded_at timestamptz NOT NULL,
    delayed_at timestamptz,
    notified_at timestamptz,
    seen_at timestamptz,
    settled_at timestamptz,
    credited_amount numeric(39, 0),
    venue_status text,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chain, tx_hash)
);
CREATE INDEX liquidity_funding_open_idx ON liquidity_funding (account_id, recorded_at) WHERE stage <> 'credited';

CREATE TABLE liquidity_withdrawals (
    liquidity_action_id text PRIMARY KEY,
    account_id text NOT NULL,
    asset_id text NOT NULL,
    chain text NOT NULL,
    net_amount numeric(39, 0) NOT NULL CHECK (net_amount > 0),
    fee numeric(39, 0) NOT NULL CHECK (fee >= 0),
    address text NOT NULL,
    wallet_label text,
    operator text,
    note text,
    requested_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    intent_hash text UNIQUE,
    nonce text,
    signed_data jsonb,
    stage text NOT NULL CHECK (stage IN ('signed', 'published', 'burned', 'completed', 'failed')),
    delayed_at timestamptz,
    published_at timestamptz,
    burned_at timestamptz,
    settled_at timestamptz,
    tx_hash text,
    transfer_tx_hash text,
    venue_status text,
    reason text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX liquidity_withdrawals_open_idx ON liquidity_withdrawals (account_id, requested_at)
    WHERE stage NOT IN ('completed', 'failed');

-- One row per account: withdrawals frozen or not, by whom, when and why.
CREATE TABLE liquidity_controls (
    account_id text PRIMARY KEY,
    withdrawals_frozen boolean NOT NULL,
    changed_by text,
    changed_at timestamptz NOT NULL,
    reason text,
    liquidity_action_id text
);

-- migrate:down

DROP TABLE liquidity_controls;
DROP TABLE liquidity_withdrawals;
DROP TABLE liquidity_funding;
DROP TABLE liquidity_deposit_addresses;
DROP TABLE liquidity_outbox;
