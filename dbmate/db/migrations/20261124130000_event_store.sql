-- migrate:up

-- One append-only table per record family (docs/design.md §5). Each row is one
-- event: envelope columns, the linking ids as indexed columns, the whole event as jsonb, and the
-- Kafka position it was read from. Rows are never updated or deleted (a trigger refuses it).

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME;
END $$;

CREATE TABLE raw_near_intents_quotes (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    quote_id text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_near_intents_quotes_occurred_at_idx ON raw_near_intents_quotes (occurred_at);
CREATE INDEX raw_near_intents_quotes_correlation_id_idx ON raw_near_intents_quotes (correlation_id);
CREATE INDEX raw_near_intents_quotes_quote_id_idx ON raw_near_intents_quotes (quote_id);
CREATE TRIGGER raw_near_intents_quotes_append_only BEFORE UPDATE OR DELETE ON raw_near_intents_quotes FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE swap_demand_events (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    quote_id text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX swap_demand_events_occurred_at_idx ON swap_demand_events (occurred_at);
CREATE INDEX swap_demand_events_correlation_id_idx ON swap_demand_events (correlation_id);
CREATE INDEX swap_demand_events_quote_id_idx ON swap_demand_events (quote_id);
CREATE TRIGGER swap_demand_events_append_only BEFORE UPDATE OR DELETE ON swap_demand_events FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE market_price_events (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    source text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX market_price_events_occurred_at_idx ON market_price_events (occurred_at);
CREATE INDEX market_price_events_correlation_id_idx ON market_price_events (correlation_id);
CREATE INDEX market_price_events_source_idx ON market_price_events (source);
CREATE TRIGGER market_price_events_append_only BEFORE UPDATE OR DELETE ON market_price_events FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE intent_inventory_snapshots (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    inventory_id text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX intent_inventory_snapshots_occurred_at_idx ON intent_inventory_snapshots (occurred_at);
CREATE INDEX intent_inventory_snapshots_correlation_id_idx ON intent_inventory_snapshots (correlation_id);
CREATE INDEX intent_inventory_snapshots_inventory_id_idx ON intent_inventory_snapshots (inventory_id);
CREATE TRIGGER intent_inventory_snapshots_append_only BEFORE UPDATE OR DELETE ON intent_inventory_snapshots FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE liquidity_actions (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    liquidity_action_id text,
    status text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX liquidity_actions_occurred_at_idx ON liquidity_actions (occurred_at);
CREATE INDEX liquidity_actions_correlation_id_idx ON liquidity_actions (correlation_id);
CREATE INDEX liquidity_actions_liquidity_action_id_idx ON liquidity_actions (liquidity_action_id);
CREATE INDEX liquidity_actions_status_idx ON liquidity_actions (status);
CREATE TRIGGER liquidity_actions_append_only BEFORE UPDATE OR DELETE ON liquidity_actions FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE trade_decisions (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    decision_id text,
    quote_id text,
    price_event_id uuid,
    inventory_snapshot_id text,
    decision text,
    decision_reason text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trade_decisions_occurred_at_idx ON trade_decisions (occurred_at);
CREATE INDEX trade_decisions_correlation_id_idx ON trade_decisions (correlation_id);
CREATE INDEX trade_decisions_decision_id_idx ON trade_decisions (decision_id);
CREATE INDEX trade_decisions_quote_id_idx ON trade_decisions (quote_id);
CREATE INDEX trade_decisions_price_event_id_idx ON trade_decisions (price_event_id);
CREATE INDEX trade_decisions_inventory_snapshot_id_idx ON trade_decisions (inventory_snapshot_id);
CREATE INDEX trade_decisions_decision_idx ON trade_decisions (decision);
CREATE INDEX trade_decisions_decision_reason_idx ON trade_decisions (decision_reason);
CREATE TRIGGER trade_decisions_append_only BEFORE UPDATE OR DELETE ON trade_decisions FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE execute_trade_commands (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    command_id text,
    decision_id text,
    quote_id text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX execute_trade_commands_occurred_at_idx ON execute_trade_commands (occurred_at);
CREATE INDEX execute_trade_commands_correlation_id_idx ON execute_trade_commands (correlation_id);
CREATE INDEX execute_trade_commands_command_id_idx ON execute_trade_commands (command_id);
CREATE INDEX execute_trade_commands_decision_id_idx ON execute_trade_commands (decision_id);
CREATE INDEX execute_trade_commands_quote_id_idx ON execute_trade_commands (quote_id);
CREATE TRIGGER execute_trade_commands_append_only BEFORE UPDATE OR DELETE ON execute_trade_commands FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TABLE trade_execution_results (
    event_id uuid PRIMARY KEY,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    observed_at timestamptz NOT NULL,
    producer text NOT NULL,
    pair text NOT NULL,
    correlation_id text,
    causation_id uuid,
    execution_id text,
    command_id text,
    quote_id text,
    status text,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    event jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trade_execution_results_occurred_at_idx ON trade_execution_results (occurred_at);
CREATE INDEX trade_execution_results_correlation_id_idx ON trade_execution_results (correlation_id);
CREATE INDEX trade_execution_results_execution_id_idx ON trade_execution_results (execution_id);
CREATE INDEX trade_execution_results_command_id_idx ON trade_execution_results (command_id);
CREATE INDEX trade_execution_results_quote_id_idx ON trade_execution_results (quote_id);
CREATE INDEX trade_execution_results_status_idx ON trade_execution_results (status);
CREATE TRIGGER trade_execution_results_append_only BEFORE UPDATE OR DELETE ON trade_execution_results FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Where each consumer group stands, written in the same transaction as the rows it covers, so
-- PostgreSQL, not Kafka, is the authority on what has been stored.
CREATE TABLE consumer_offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Messages that could not be understood: kept with their raw bytes and the reason, never dropped.
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    service text NOT NULL,
    source text NOT NULL,
    topic text,
    partition integer,
    kafka_offset bigint,
    key bytea,
    value bytea,
    reason text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX dead_letters_kafka_position_idx ON dead_letters (service, topic, partition, kafka_offset);
CREATE INDEX dead_letters_received_at_idx ON dead_letters (received_at);

-- Every change of state made through a control socket: who, what, when, and the outcome.
CREATE TABLE control_actions (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    service text NOT NULL,
    action text NOT NULL,
    operator text NOT NULL,
    reason text,
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    outcome text NOT NULL
);
CREATE INDEX control_actions_service_at_idx ON control_actions (service, at);
CREATE TRIGGER control_actions_append_only BEFORE UPDATE OR DELETE ON control_actions
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Views answering the operator's questions (docs/design.md §5).

-- The fair price and the credited inventory behind every decision.
CREATE VIEW decision_context AS
SELECT d.decision_id,
       d.quote_id,
       d.occurred_at AS decided_at,
       d.decision,
       d.decision_reason,
       d.event -> 'payload' ->> 'direction' AS direction,
       d.event -> 'payload' ->> 'implied_rate' AS implied_rate,
       d.event -> 'payload' ->> 'reference_rate' AS reference_rate,
       d.event -> 'payload' ->> 'gross_edge_pct' AS gross_edge_pct,
       d.price_event_id,
       p.occurred_at AS price_at,
       p.source AS price_source,
       p.event -> 'payload' ->> 'fair_rate_buy_btc' AS fair_rate_buy_btc,
       p.event -> 'payload' ->> 'fair_rate_sell_btc' AS fair_rate_sell_btc,
       p.event -> 'payload' ->> 'eure_basis' AS eure_basis,
       d.inventory_snapshot_id,
       i.occurred_at AS inventory_at,
       i.event -> 'payload' -> 'assets' AS inventory_assets
FROM trade_decisions d
LEFT JOIN market_price_events p ON p.event_id = d.price_event_id
LEFT JOIN LATERAL (
    SELECT s.occurred_at, s.event FROM intent_inventory_snapshots s
    WHERE s.inventory_id = d.inventory_snapshot_id
    ORDER BY s.occurred_at DESC LIMIT 1
) i ON true;

-- The latest status of every liquidity action.
CREATE VIEW liquidity_action_latest AS
SELECT DISTINCT ON (liquidity_action_id)
       liquidity_action_id,
       event -> 'payload' ->> 'kind' AS kind,
       status,
       event -> 'payload' ->> 'asset_id' AS asset_id,
       event -> 'payload' ->> 'chain' AS chain,
       event -> 'payload' ->> 'amount' AS amount,
       event -> 'payload' ->> 'tx_hash' AS tx_hash,
       event -> 'payload' ->> 'reason' AS reason,
       occurred_at AS status_at
FROM liquidity_actions
ORDER BY liquidity_action_id, occurred_at DESC, written_at DESC;

-- Treasury funding still pending (requested, notified or seen but not credited, or delayed).
CREATE VIEW pending_funding AS
SELECT * FROM liquidity_action_latest
WHERE kind = 'funding' AND status IN ('requested', 'notified', 'pending', 'delayed');

-- Why each skipped quote was skipped.
CREATE VIEW skipped_quotes AS
SELECT quote_id, decision_id, decision_reason, occurred_at AS decided_at,
       event -> 'payload' ->> 'direction' AS direction,
       event -> 'payload' ->> 'gross_edge_pct' AS gross_edge_pct
FROM trade_decisions
WHERE decision = 'reject';

-- The command emitted for each quote.
CREATE VIEW quote_commands AS
SELECT quote_id, command_id, decision_id, occurred_at AS commanded_at,
       event -> 'payload' ->> 'amount_in' AS amount_in,
       event -> 'payload' ->> 'amount_out' AS amount_out,
       event -> 'payload' ->> 'answer_by' AS answer_by
FROM execute_trade_commands;

-- What the venue answered for each command, every result in order.
CREATE VIEW venue_answers AS
SELECT quote_id, command_id, execution_id, status, occurred_at AS result_at,
       event -> 'payload' ->> 'reason' AS reason,
       event -> 'payload' -> 'venue_response' AS venue_response,
       event -> 'payload' ->> 'quote_hash' AS quote_hash,
       event -> 'payload' ->> 'tx_hash' AS tx_hash
FROM trade_execution_results;

-- migrate:down

DROP VIEW venue_answers;
DROP VIEW quote_commands;
DROP VIEW skipped_quotes;
DROP VIEW pending_funding;
DROP VIEW liquidity_action_latest;
DROP VIEW decision_context;
DROP TABLE control_actions;
DROP TABLE dead_letters;
DROP TABLE consumer_offsets;
DROP TABLE trade_execution_results;
DROP TABLE execute_trade_commands;
DROP TABLE trade_decisions;
DROP TABLE liquidity_actions;
DROP TABLE intent_inventory_snapshots;
DROP TABLE market_price_events;
DROP TABLE swap_demand_events;
DROP TABLE raw_near_intents_quotes;
DROP FUNCTION refuse_change();
