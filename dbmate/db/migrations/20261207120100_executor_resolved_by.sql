-- migrate:up
-- An acknowledged answer may also be expired by the relay's silence (no quote_status for it on a
-- guaranteed-delivery stream that stayed connected past its deadline + the status wait), and an
-- answer the chain could not decide is resolved by a recorded operator verdict.
ALTER TABLE executor_ledger DROP CONSTRAINT executor_ledger_resolved_by_check;
ALTER TABLE executor_ledger ADD CONSTRAINT executor_ledger_resolved_by_check
    CHECK (resolved_by IN ('quote_status', 'is_nonce_used', 'no_quote_status', 'operator'));

-- migrate:down
ALTER TABLE executor_ledger DROP CONSTRAINT executor_ledger_resolved_by_check;
ALTER TABLE executor_ledger ADD CONSTRAINT executor_ledger_resolved_by_check
    CHECK (resolved_by IN ('quote_status', 'is_nonce_used'));
