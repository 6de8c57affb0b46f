-- Projects: one SaaS customer of the gateway. Limits are bytes; NULL = unlimited.
CREATE TABLE projects (
    id                          text PRIMARY KEY,
    name                        text NOT NULL UNIQUE,
    max_file_size_bytes         bigint CHECK (max_file_size_bytes > 0),
    storage_limit_bytes         bigint CHECK (storage_limit_bytes >= 0),
    default_tenant_limit_bytes  bigint CHECK (default_tenant_limit_bytes >= 0),
    storage_used_bytes          bigint NOT NULL DEFAULT 0,
    total_files                 bigint NOT NULL DEFAULT 0,
    -- bumped with every change of storage_used_bytes (Redis mirrors used at a version)
    usage_version               bigint NOT NULL DEFAULT 1,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
