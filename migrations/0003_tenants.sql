-- Tenants of a project. limit_set = a limit was PATCHed (NULL then means unlimited);
-- otherwise the project's default_tenant_limit_bytes applies.
CREATE TABLE tenants (
    project_id           text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    tenant_id            text NOT NULL,
    email                text,
    plan                 text,
    limit_set            boolean NOT NULL DEFAULT false,
    storage_limit_bytes  bigint CHECK (storage_limit_bytes >= 0),
    storage_used_bytes   bigint NOT NULL DEFAULT 0,
    total_files          bigint NOT NULL DEFAULT 0,
    usage_version        bigint NOT NULL DEFAULT 1,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, tenant_id)
);
CREATE INDEX tenants_used_idx ON tenants (project_id, storage_used_bytes DESC);
