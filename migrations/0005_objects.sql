-- The ledger of stored objects: the source of usage. A removed object stays as a
-- tombstone (present = false) so that a late, older event cannot resurrect it.
CREATE TABLE objects (
    object_key   text PRIMARY KEY,
    project_id   text NOT NULL,
    tenant_id    text NOT NULL,
    upload_id    text,
    size_bytes   bigint NOT NULL DEFAULT 0,
    etag         text,
    version_id   text,
    present      boolean NOT NULL,
    -- ordering of the last applied change: S3 sequencer (normalised) and event time
    sequencer    text,
    event_time   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, tenant_id) REFERENCES tenants (project_id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX objects_tenant_idx ON objects (project_id, tenant_id, object_key) WHERE present;
