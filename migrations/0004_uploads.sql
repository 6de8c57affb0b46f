-- Every upload URL handed out. A 'pending' row is the durable record of a
-- reservation: Redis reservations are rebuilt from these rows.
-- No foreign key to tenants: its check would take a KEY SHARE lock on the tenant row
-- for every upload, and a busy tenant must not serialise on a row (the insert path
-- creates the tenant first; tenants are never deleted apart from their project).
CREATE TABLE uploads (
    id                text PRIMARY KEY,
    project_id        text NOT NULL,
    tenant_id         text NOT NULL,
    object_key        text NOT NULL,  -- {project}/{tenant}/{id}/{filename}: unique by id
    filename          text NOT NULL,
    content_type      text NOT NULL,
    method            text NOT NULL CHECK (method IN ('PUT', 'POST')),
    -- NULL: no size was declared (unlimited tenant); it reserves nothing
    declared_size     bigint CHECK (declared_size >= 0),
    actual_size       bigint,
    checksum_sha256   text,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'completed', 'expired', 'cancelled', 'rejected')),
    flagged           boolean NOT NULL DEFAULT false,
    idempotency_key   text,
    request_hash      bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    settled_at        timestamptz
);
CREATE UNIQUE INDEX uploads_idempotency_idx ON uploads (project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX uploads_pending_tenant_idx ON uploads (project_id, tenant_id) WHERE status = 'pending';
CREATE INDEX uploads_pending_expiry_idx ON uploads (expires_at) WHERE status = 'pending';
