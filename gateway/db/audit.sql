-- Named queries of the audit log (gateway/audit.py). Parameters are $n only.

-- name: insert_entry
INSERT INTO audit_log (id, project_id, action, actor_type, actor_id, tenant_id, before,
                       after, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9);

-- name: list_entries
-- A project's entries, newest first; $2 tenant id and $3 action filter (NULL = any),
-- $4 offset, $5 limit. Every row carries the filtered total.
SELECT id, at, action, actor_type, actor_id, tenant_id, before::text AS before,
       after::text AS after, request_id, count(*) OVER () AS total_count
FROM audit_log
WHERE project_id = $1
  AND ($2::text IS NULL OR tenant_id = $2)
  AND ($3::text IS NULL OR action = $3)
ORDER BY seq DESC
OFFSET $4 LIMIT $5;

-- name: count_entries
SELECT count(*) FROM audit_log
WHERE project_id = $1
  AND ($2::text IS NULL OR tenant_id = $2)
  AND ($3::text IS NULL OR action = $3);

-- name: lock_project
-- A project's row, locked for a change that the log records with its before.
SELECT * FROM projects WHERE id = $1 FOR UPDATE;

-- name: ensure_tenant
INSERT INTO tenants (project_id, tenant_id) VALUES ($1, $2)
ON CONFLICT (project_id, tenant_id) DO NOTHING;

-- name: lock_tenant_limit
-- A tenant's limit fields (its own, and the effective one), locked for a change.
SELECT t.limit_set, t.storage_limit_bytes AS own_limit, t.plan, t.storage_used_bytes,
       CASE WHEN t.limit_set THEN t.storage_limit_bytes ELSE p.default_tenant_limit_bytes END
           AS storage_limit_bytes
FROM tenants t JOIN projects p ON p.id = t.project_id
WHERE t.project_id = $1 AND t.tenant_id = $2
FOR UPDATE OF t;

-- name: clear_tenant_limit
-- Back to the project's default limit.
UPDATE tenants SET limit_set = false, storage_limit_bytes = NULL, updated_at = now()
WHERE project_id = $1 AND tenant_id = $2;
