-- migrate:up

-- The trade-executor's idempotency ledger (docs/design.md §5). One row per
-- command, written before anything is signed, updated in place as the command moves through
--   received → signing → submitted → acknowledged | rejected | uncertain → settled | expired
-- (refused for a command refused before signing). The nonce and deadline are stored when the
-- row enters `signing`, the full signed payload and its quote_hash when it enters `submitted`,
-- which happens before the answer is sent: a restart finds every answer that may be out.
-- Unique by command_id and by quote_id, so no quote is ever answered twice. Rows are never
-- deleted (duplicate suppression must outlive everything).

CREATE TABLE executor_ledger (
    command_id text PRIMARY KEY,
    quote_id text NOT NULL,
    execution_id text NOT NULL,
    decision_id text,
    command_event_id uuid,
    state text NOT NULL CHECK (state IN ('received', 'signing', 'submitted', 'acknowledged', 'rejected',
                                         'uncertain', 'settled', 'expired', 'refused')),
    -- the command as given (the whole event in `command`)
    direction text NOT NULL,
    asset_in text NOT NULL,
    asset_out text NOT NULL,
    amount_in numeric(39, 0) NOT NULL CHECK (amount_in >= 0),
    amount_out numeric(39, 0) NOT NULL CHECK (amount_out >= 0),
    fixed_side text NOT NULL,
    min_deadline_ms integer NOT NULL,
    answer_by timestamptz NOT NULL,
    command jsonb NOT NULL,
    -- the executor's own late inventory check of the asset it gives
    inventory_id text,
    spendable_at_check numeric(39, 0),
    reserved_at_check numeric(39, 0),
    -- the answer, stored as soon as each part exists
    signer_id text,
    salt text,
    nonce text,
    deadline timestamptz,
    quote_output jsonb,
    signed_data jsonb,
    quote_hash text,
    -- what happened
    reason text,
    reason_code text,
    venue_response jsonb,
    intent_hash text,
    tx_hash text,
    resolved_by text CHECK (resolved_by IN ('quote_status', 'is_nonce_used')),
    resolution jsonb,
    cancel_requested_at timestamptz,
    cancel_response jsonb,
    -- the state whose exec.trade_result is known published (NULL: none yet)
    published_state text,
    -- stage and transition times
    received_at timestamptz NOT NULL,
    signing_at timestamptz,
    signed_at timestamptz,
    submitted_at timestamptz,
    sent_at timestamptz,
    venue_answered_at timestamptz,
    acknowledged_at timestamptz,
    rejected_at timestamptz,
    uncertain_at timestamptz,
    settled_at timestamptz,
    expired_at timestamptz,
    refused_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT executor_ledger_quote_id_key UNIQUE (quote_id),
    CONSTRAINT executor_ledger_execution_id_key UNIQUE (execution_id),
    CONSTRAINT executor_ledger_quote_hash_key UNIQUE (quote_hash),
    -- nothing is ever signed for a refused command
    CONSTRAINT executor_ledger_refused_unsigned CHECK (state <> 'refused' OR (nonce IS NULL AND signed_data IS NULL)),
    -- past `received`, the nonce and deadline exist (they are chosen before signing)
    CONSTRAINT executor_ledger_nonce_known CHECK (state IN ('received', 'refused') OR (nonce IS NOT NULL AND deadline IS NOT NULL)),
    -- anything that may have been sent has its signed payload and quote_hash stored
    CONSTRAINT executor_ledger_payload_known CHECK (
        state NOT IN ('submitted', 'acknowledged', 'rejected', 'uncertain')
        OR (signed_data IS NOT NULL AND quote_hash IS NOT NULL))
);
CREATE INDEX executor_ledger_unresolved_idx ON executor_ledger (state)
    WHERE state IN ('received', 'signing', 'submitted', 'acknowledged', 'uncertain');
CREATE INDEX executor_ledger_unpublished_idx ON executor_ledger (updated_at)
    WHERE published_state IS DISTINCT FROM state;
CREATE INDEX executor_ledger_settled_at_idx ON executor_ledger (settled_at) WHERE settled_at IS NOT NULL;
CREATE INDEX executor_ledger_received_at_idx ON executor_ledger (received_at);
CREATE TRIGGER executor_ledger_no_delete BEFORE DELETE ON executor_ledger
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- migrate:down

DROP TABLE executor_ledger;
