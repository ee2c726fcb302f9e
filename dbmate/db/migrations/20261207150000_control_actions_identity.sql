-- migrate:up
-- The caller's kernel identity (the control socket peer's uid and user, or the TCP token holder),
-- recorded beside the operator name a request claims: a claim never replaces it. Rows from
-- before this migration have none.
ALTER TABLE control_actions ADD COLUMN identity text;

-- migrate:down
ALTER TABLE control_actions DROP COLUMN identity;
