-- Outbound webhooks: endpoints, the outbox of events, one delivery per event and
-- endpoint, and the threshold lines each tenant has reached.

CREATE TABLE webhook_endpoints (
    id               text PRIMARY KEY,
    project_id       text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url              text NOT NULL,
    events           text[] NOT NULL,
    description      text NOT NULL DEFAULT '',
    enabled          boolean NOT NULL DEFAULT true,
    -- the signing secret, sealed (gateway/webhooks/signing.py: "fernet:…" when
    -- GATEWAY_WEBHOOK_ENCRYPTION_KEYS is set, else "plain:whsec_…"); never shown again
    secret           text NOT NULL,
    -- the secret before the last rotation, signing beside the new one until then
    previous_secret  text,
    previous_until   timestamptz,
    -- since when every attempt has failed (NULL after a success); the endpoint is
    -- disabled once this is older than GATEWAY_WEBHOOK_DISABLE_AFTER
    failing_since    timestamptz,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_project_idx ON webhook_endpoints (project_id, created_at, id);

-- The outbox: an event is written in the transaction of the change it tells of, and
-- only when at least one endpoint then takes its type. ``body`` is what is sent.
CREATE TABLE webhook_events (
    id          text PRIMARY KEY,
    project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    type        text NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- (ids are time-ordered, evt_<ms><random>: pruning walks the primary key)

-- One per (endpoint, event). ``next_attempt_at`` is also the lease: a claimed
-- delivery gets it pushed past the attempt's time-out, so a worker that dies mid-
-- attempt leaves it to be claimed again (at least once). ``lease_until`` marks it
-- in flight (bounded per endpoint).
CREATE TABLE webhook_deliveries (
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id          text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_until       timestamptz,
    -- retries go on until GATEWAY_WEBHOOK_RETRY_FOR after this (a manual retry
    -- starts the window again)
    retry_since       timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased_idx ON webhook_deliveries (endpoint_id, lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
-- for the cascade from pruned events; the deliveries log walks the primary key
-- backwards (event ids are time-ordered)
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
-- a queue table: its rows are updated twice and its size swings, so it is vacuumed
-- and analyzed long before the defaults (20 % / 10 % of the table changed) would
ALTER TABLE webhook_deliveries SET (
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01, autovacuum_analyze_threshold = 1000
);
-- Threshold lines (percent of the effective byte limit) a project's tenants are told
-- about, and the lines each tenant's settled usage has reached (re-armed when it
-- falls back below). Written under the tenant row's lock, so racing settlements
-- cross a line once.
ALTER TABLE projects ADD COLUMN webhook_thresholds smallint[] NOT NULL DEFAULT '{70,90,100}';
ALTER TABLE tenants ADD COLUMN thresholds_reached smallint[] NOT NULL DEFAULT '{}';
