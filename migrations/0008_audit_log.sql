-- The audit log: one row per change of limits, project settings, keys and webhooks,
-- written in the same transaction as the change. ``seq`` orders it (newest first is
-- ``ORDER BY seq DESC``); ``id`` is what the API shows. before/after hold the API's
-- field names, never a secret. actor_type 'api_key' (actor_id the key's id), 'cli'
-- (actor_id the operator's login name, if known) or 'system' (the gateway itself,
-- e.g. disabling a failing webhook endpoint).
CREATE TABLE audit_log (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text NOT NULL UNIQUE,
    project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text NOT NULL,
    actor_type  text NOT NULL CHECK (actor_type IN ('api_key', 'cli', 'system')),
    actor_id    text,
    tenant_id   text,
    before      jsonb,
    after       jsonb,
    request_id  text
);
CREATE INDEX audit_log_project_idx ON audit_log (project_id, seq DESC);
CREATE INDEX audit_log_tenant_idx ON audit_log (project_id, tenant_id, seq DESC)
    WHERE tenant_id IS NOT NULL;
CREATE INDEX audit_log_action_idx ON audit_log (project_id, action, seq DESC);
