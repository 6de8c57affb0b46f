-- Named queries, loaded once by gateway.db.queries. Parameters are $n only.

-- name: get_api_key
SELECT k.id, k.project_id, k.secret_hash
FROM api_keys k
WHERE k.id = $1 AND k.revoked_at IS NULL;

-- name: upload_context
-- One round trip for a batch of upload requests: each request's key, its project
-- and the tenant (if any). $1 key ids, $2 tenant ids; rows carry the 1-based
-- position of their request (a request with an unknown or revoked key has no row).
-- Where $3 is true (a tenant whose quota hash may be missing in Redis) the row also
-- carries the tenant's reservations in force (ids, sizes, deadlines in ms since the
-- epoch), read in the same snapshot as its usage:
-- the hash can then be rebuilt in the script call that judges the upload. A tenant
-- without a row has none (its rows and its uploads' are written in one statement).
SELECT i.ord, k.secret_hash, k.project_id,
       p.max_file_size_bytes, p.storage_limit_bytes AS project_limit,
       p.default_tenant_limit_bytes, p.storage_used_bytes AS project_used,
       p.usage_version AS project_version,
       t.tenant_id IS NOT NULL AS tenant_exists, t.limit_set, t.email AS tenant_email,
       t.storage_limit_bytes AS tenant_limit, t.storage_used_bytes AS tenant_used,
       t.usage_version AS tenant_version,
       i.snapshot AS snapshot_read, r.ids AS pending_ids, r.sizes AS pending_sizes,
       r.deadlines AS pending_deadlines
FROM unnest($1::text[], $2::text[], $3::boolean[]) WITH ORDINALITY
     AS i(key_id, tenant_id, snapshot, ord)
JOIN api_keys k ON k.id = i.key_id AND k.revoked_at IS NULL
JOIN projects p ON p.id = k.project_id
LEFT JOIN tenants t ON t.project_id = k.project_id AND t.tenant_id = i.tenant_id
LEFT JOIN LATERAL (
    SELECT array_agg(u.id) AS ids, array_agg(COALESCE(u.declared_size, 0)) AS sizes,
           array_agg((extract(epoch FROM u.reserved_until) * 1000)::bigint) AS deadlines
    FROM uploads u
    WHERE i.snapshot AND t.tenant_id IS NOT NULL
      AND u.project_id = k.project_id AND u.tenant_id = i.tenant_id
      AND u.status = 'pending' AND u.reserved_until > now()
) r ON i.snapshot;

-- name: insert_project
INSERT INTO projects (id, name, max_file_size_bytes, storage_limit_bytes, default_tenant_limit_bytes)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: get_project
SELECT * FROM projects WHERE id = $1;

-- name: get_project_by_name
SELECT * FROM projects WHERE name = $1;

-- name: update_project
-- $3..$5 are applied only where the matching $6..$8 flag is true.
UPDATE projects SET
    name = COALESCE($2, name),
    max_file_size_bytes = CASE WHEN $6 THEN $3 ELSE max_file_size_bytes END,
    storage_limit_bytes = CASE WHEN $7 THEN $4 ELSE storage_limit_bytes END,
    default_tenant_limit_bytes = CASE WHEN $8 THEN $5 ELSE default_tenant_limit_bytes END,
    updated_at = now()
WHERE id = $1
RETURNING *;

-- name: insert_api_key
INSERT INTO api_keys (id, project_id, secret_hash) VALUES ($1, $2, $3)
RETURNING id, project_id, created_at;

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
RETURNING id, project_id;

-- name: get_tenant_usage
SELECT t.tenant_id, t.email, t.plan, t.storage_used_bytes, t.total_files,
       CASE WHEN t.limit_set THEN t.storage_limit_bytes ELSE p.default_tenant_limit_bytes END
           AS storage_limit_bytes,
       COALESCE((SELECT sum(u.declared_size) FROM uploads u
                 WHERE u.project_id = t.project_id AND u.tenant_id = t.tenant_id
                   AND u.status = 'pending' AND u.reserved_until > now()), 0)::bigint
           AS storage_reserved_bytes
FROM tenants t JOIN projects p ON p.id = t.project_id
WHERE t.project_id = $1 AND t.tenant_id = $2;

-- name: set_tenant_limit
-- Creates the tenant if needed. Returns whether it was created.
INSERT INTO tenants (project_id, tenant_id, limit_set, storage_limit_bytes, plan)
VALUES ($1, $2, true, $3, $4)
ON CONFLICT (project_id, tenant_id) DO UPDATE
    SET limit_set = true, storage_limit_bytes = EXCLUDED.storage_limit_bytes,
        plan = COALESCE(EXCLUDED.plan, tenants.plan), updated_at = now()
RETURNING (xmax = 0) AS created;

-- name: list_tenants
-- $2 over_limit filter (NULL = any), $3 min percentage (NULL = any),
-- $4 order column, $5 offset, $6 limit.
WITH u AS (
    SELECT t.tenant_id, t.email, t.plan, t.storage_used_bytes, t.total_files,
           CASE WHEN t.limit_set THEN t.storage_limit_bytes ELSE p.default_tenant_limit_bytes END
               AS storage_limit_bytes,
           COALESCE(r.reserved, 0)::bigint AS storage_reserved_bytes
    FROM tenants t
    JOIN projects p ON p.id = t.project_id
    LEFT JOIN (SELECT tenant_id, sum(declared_size) AS reserved FROM uploads
               WHERE project_id = $1 AND status = 'pending' AND reserved_until > now()
               GROUP BY tenant_id) r
           ON r.tenant_id = t.tenant_id
    WHERE t.project_id = $1
), f AS (
    SELECT u.*,
           CASE WHEN storage_limit_bytes IS NULL THEN NULL
                WHEN storage_limit_bytes = 0 THEN
                     CASE WHEN storage_used_bytes > 0 THEN 100.0 ELSE 0.0 END
                -- rounded half up to hundredths, exactly as gateway.limits.percentage
                ELSE div(storage_used_bytes::numeric * 20000 + storage_limit_bytes,
                         2 * storage_limit_bytes::numeric) / 100 END AS pct
    FROM u
)
SELECT f.*, count(*) OVER () AS total_count
FROM f
WHERE ($2::boolean IS NULL
       OR $2 = (storage_limit_bytes IS NOT NULL AND storage_used_bytes > storage_limit_bytes))
  AND ($3::float8 IS NULL OR (pct IS NOT NULL AND pct >= $3))
ORDER BY
    CASE WHEN $4 = 'storage_used_bytes' THEN storage_used_bytes END ASC,
    CASE WHEN $4 = '-storage_used_bytes' THEN storage_used_bytes END DESC,
    CASE WHEN $4 = 'percentage_used' THEN pct END ASC NULLS FIRST,
    CASE WHEN $4 = '-percentage_used' THEN pct END DESC NULLS LAST,
    CASE WHEN $4 = '-tenant_id' THEN tenant_id END DESC,
    tenant_id ASC
OFFSET $5 LIMIT $6;

-- name: project_usage
SELECT p.id AS project_id, p.name, p.storage_used_bytes, p.total_files,
       p.storage_limit_bytes, p.default_tenant_limit_bytes, p.max_file_size_bytes,
       (SELECT count(*) FROM tenants t WHERE t.project_id = p.id) AS total_tenants,
       COALESCE((SELECT sum(declared_size) FROM uploads u
                 WHERE u.project_id = p.id AND u.status = 'pending'
                   AND u.reserved_until > now()), 0)::bigint
           AS storage_reserved_bytes
FROM projects p WHERE p.id = $1;

-- name: insert_uploads
-- The pending upload rows of a batch of requests, in one statement: creates the
-- tenants flagged in $4 on first use (no lock on an existing tenant row), then the
-- uploads. Answers the ids inserted (an upload whose idempotency key was used
-- before is not) and the tenants created, as "project/tenant".
WITH i AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                         $11::text[], $12::text[], $13::bytea[], $14::timestamptz[],
                         $15::timestamptz[], $16::timestamptz[])
        AS i(id, project_id, tenant_id, new_tenant, email, object_key, filename,
             content_type, method, declared_size, checksum_sha256, idempotency_key,
             request_hash, created_at, expires_at, reserved_until)
), new_tenants AS (
    INSERT INTO tenants (project_id, tenant_id, email)
    SELECT DISTINCT ON (project_id, tenant_id) project_id, tenant_id, email
    FROM i WHERE new_tenant
    ORDER BY project_id, tenant_id
    ON CONFLICT (project_id, tenant_id) DO NOTHING
    RETURNING project_id, tenant_id
), inserted AS (
    INSERT INTO uploads (id, project_id, tenant_id, object_key, filename, content_type,
                         method, declared_size, checksum_sha256, idempotency_key,
                         request_hash, created_at, expires_at, reserved_until)
    SELECT id, project_id, tenant_id, object_key, filename, content_type, method,
           declared_size, checksum_sha256, idempotency_key, request_hash, created_at,
           expires_at, reserved_until
    FROM i
    ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT ARRAY(SELECT id FROM inserted) AS inserted,
       ARRAY(SELECT project_id || '/' || tenant_id FROM new_tenants) AS new_tenants;

-- name: set_tenant_email
UPDATE tenants SET email = $3, updated_at = now()
WHERE project_id = $1 AND tenant_id = $2 AND email IS DISTINCT FROM $3;

-- name: get_upload_by_idempotency_key
SELECT * FROM uploads WHERE project_id = $1 AND idempotency_key = $2;

-- name: release_idempotency_key
UPDATE uploads SET idempotency_key = NULL WHERE project_id = $1 AND idempotency_key = $2;

-- name: forget_uploads
-- Uploads whose requests failed or were refused before a URL was issued: their rows
-- go (nothing refers to them), and the caller releases their Redis reservations.
DELETE FROM uploads WHERE id = ANY($1::text[]) AND status = 'pending'
RETURNING id, project_id, tenant_id;

-- name: reserved_for_tenant
SELECT COALESCE(sum(declared_size), 0)::bigint FROM uploads
WHERE project_id = $1 AND tenant_id = $2 AND status = 'pending' AND reserved_until > now();

-- name: reserved_for_project
SELECT COALESCE(sum(declared_size), 0)::bigint FROM uploads
WHERE project_id = $1 AND status = 'pending' AND reserved_until > now();

-- name: get_upload
SELECT * FROM uploads WHERE id = $1 AND project_id = $2;

-- name: quota_snapshots
-- What Redis quota hashes are rebuilt from, for many hashes in one statement (so one
-- consistent snapshot): $1 project ids and $2 tenant ids side by side, tenant NULL
-- for the project's own hash. Rows carry the 1-based position of their hash: 'u' its
-- usage and version (NULLs for a tenant without a row yet), 'r' one per reservation
-- still in force (upload id, its tenant, declared size, deadline in ms).
WITH k AS (
    SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(project_id, tenant_id, ord)
)
SELECT k.ord, 'u' AS kind, NULL AS id, NULL AS tenant_id,
       CASE WHEN k.tenant_id IS NULL THEN p.storage_used_bytes ELSE t.storage_used_bytes END
           AS used,
       CASE WHEN k.tenant_id IS NULL THEN p.usage_version ELSE t.usage_version END AS version,
       NULL::bigint AS deadline_ms
FROM k JOIN projects p ON p.id = k.project_id
LEFT JOIN tenants t ON t.project_id = k.project_id AND t.tenant_id = k.tenant_id
UNION ALL
SELECT k.ord, 'r', u.id, u.tenant_id, COALESCE(u.declared_size, 0), NULL,
       (extract(epoch FROM u.reserved_until) * 1000)::bigint
FROM k JOIN uploads u ON u.project_id = k.project_id AND u.tenant_id = k.tenant_id
WHERE k.tenant_id IS NOT NULL AND u.status = 'pending' AND u.reserved_until > now()
UNION ALL
SELECT k.ord, 'r', u.id, u.tenant_id, COALESCE(u.declared_size, 0), NULL,
       (extract(epoch FROM u.reserved_until) * 1000)::bigint
FROM k JOIN uploads u ON u.project_id = k.project_id
WHERE k.tenant_id IS NULL AND u.status = 'pending' AND u.reserved_until > now();

-- name: lock_uploads
SELECT id, project_id, tenant_id, declared_size, status FROM uploads
WHERE id = ANY($1::text[])
ORDER BY id
FOR UPDATE;

-- name: finish_upload
-- Moves a pending upload to a final state; returns it only if it was pending.
UPDATE uploads SET status = $3, settled_at = now()
WHERE id = $1 AND project_id = $2 AND status = 'pending'
RETURNING *;

-- name: expire_uploads
-- Claims a batch of reservations past their deadline (they stopped counting for
-- admission at that moment already); SKIP LOCKED keeps replicas apart. $1 batch size.
UPDATE uploads SET status = 'expired', settled_at = now()
WHERE id IN (
    SELECT id FROM uploads
    WHERE status = 'pending' AND reserved_until <= now()
    ORDER BY reserved_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, project_id, tenant_id, declared_size;

-- name: pending_among
-- Which of these uploads are still pending (the audit's check of Redis fields).
SELECT id FROM uploads WHERE id = ANY($1::text[]) AND status = 'pending';

-- name: old_pending_page
-- The audit's walk over pending uploads older than the admission window ($1 s), by
-- age: the next $4 after ($2 created_at, $3 id).
SELECT id, project_id, tenant_id, created_at FROM uploads
WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)
  AND reserved_until > now() AND (created_at, id) > ($2, $3)
ORDER BY created_at, id
LIMIT $4;

-- name: forget_unadmitted
-- Pending uploads that were never admitted and whose requests can no longer be (older
-- than the admission window, $2 s): the audit's repair of a failed request's row.
-- (One past its deadline is left to the sweeper, which marks it expired.)
DELETE FROM uploads
WHERE id = ANY($1::text[]) AND status = 'pending' AND reserved_until > now()
  AND created_at < now() - make_interval(secs => $2)
RETURNING id, project_id, tenant_id;

-- name: project_page
SELECT id FROM projects WHERE id > $1 ORDER BY id LIMIT $2;

-- name: lock_objects
-- The rows of a batch's keys, locked; a key without one is new to the ledger (and
-- write_ledger_batch inserts it, or finds that another transaction was first).
SELECT object_key, project_id, tenant_id, upload_id, size_bytes, etag, version_id,
       present, sequencer, event_time
FROM objects WHERE object_key = ANY($1::text[])
ORDER BY object_key
FOR UPDATE;

-- name: ensure_tenants
-- The projects among $1 that exist; a tenant row for each of their (project, tenant)
-- pairs ($1, $2 side by side, sorted) that has none yet.
WITH known AS (SELECT id FROM projects WHERE id = ANY($1::text[])),
ins AS (
    INSERT INTO tenants (project_id, tenant_id)
    SELECT k.p, k.t FROM unnest($1::text[], $2::text[]) AS k(p, t)
    WHERE k.p IN (SELECT id FROM known)
    ON CONFLICT (project_id, tenant_id) DO NOTHING
)
SELECT id FROM known;

-- name: write_ledger_batch
-- The writes of one ledger batch in one round trip (any part may be empty):
-- objects ($1-$10, $24 true for a key that had no row: inserted, else updated);
-- tenants' and projects' usage moved by deltas ($11-$14, $15-$17); pending uploads
-- settled ($18-$21); and the usage of the tenants ($22, $23) and projects ($22)
-- touched without a delta, read. Rows by kind: 't' a tenant's usage after its
-- delta, 'p' a project's, 's' a settled upload (its id as tenant_id), 'n' a key
-- inserted (as tenant_id: one missing means another transaction wrote that key
-- first), 'r' a tenant's usage as read, 'q' a project's as read (before this
-- statement's deltas: use it only for a project without one).
WITH updated AS (
    UPDATE objects o SET
        upload_id = COALESCE(d.upload_id, o.upload_id),
        size_bytes = d.size_bytes, etag = d.etag, version_id = d.version_id,
        present = d.present, sequencer = d.sequencer, event_time = d.event_time,
        updated_at = now()
    FROM unnest($1::text[], $4::text[], $5::bigint[], $6::text[], $7::text[],
                $8::boolean[], $9::text[], $10::timestamptz[], $24::boolean[])
         AS d(object_key, upload_id, size_bytes, etag, version_id, present, sequencer,
              event_time, is_new)
    WHERE o.object_key = d.object_key AND NOT d.is_new
),
inserted AS (
    INSERT INTO objects (object_key, project_id, tenant_id, upload_id, size_bytes, etag,
                         version_id, present, sequencer, event_time, updated_at)
    SELECT d.object_key, d.project_id, d.tenant_id, d.upload_id, d.size_bytes, d.etag,
           d.version_id, d.present, d.sequencer, d.event_time, now()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                $6::text[], $7::text[], $8::boolean[], $9::text[], $10::timestamptz[],
                $24::boolean[])
         AS d(object_key, project_id, tenant_id, upload_id, size_bytes, etag, version_id,
              present, sequencer, event_time, is_new)
    WHERE d.is_new
    ORDER BY d.object_key
    ON CONFLICT (object_key) DO NOTHING
    RETURNING object_key
),
tenant_rows AS (
    UPDATE tenants t SET
        storage_used_bytes = t.storage_used_bytes + d.bytes,
        total_files = t.total_files + d.files,
        usage_version = t.usage_version + 1,
        updated_at = now()
    FROM unnest($11::text[], $12::text[], $13::bigint[], $14::bigint[])
         AS d(project_id, tenant_id, bytes, files)
    WHERE t.project_id = d.project_id AND t.tenant_id = d.tenant_id
    RETURNING t.project_id, t.tenant_id, t.storage_used_bytes, t.usage_version
),
project_rows AS (
    UPDATE projects p SET
        storage_used_bytes = p.storage_used_bytes + d.bytes,
        total_files = p.total_files + d.files,
        usage_version = p.usage_version + 1,
        updated_at = now()
    FROM unnest($15::text[], $16::bigint[], $17::bigint[]) AS d(project_id, bytes, files)
    WHERE p.id = d.project_id
    RETURNING p.id, p.storage_used_bytes, p.usage_version
),
settled AS (
    UPDATE uploads u SET status = d.status, actual_size = d.actual, flagged = d.flagged,
                         settled_at = now()
    FROM unnest($18::text[], $19::bigint[], $20::text[], $21::boolean[])
         AS d(id, actual, status, flagged)
    WHERE u.id = d.id AND u.status = 'pending'
    RETURNING u.id
)
-- inserted first: new keys are written before the tenant and project rows are
-- locked, the order every batch takes (uploads, objects, tenants, projects)
SELECT 'n' AS kind, NULL AS project_id, object_key AS tenant_id, NULL::bigint AS used,
       NULL::bigint AS version
FROM inserted
UNION ALL
SELECT 't', project_id, tenant_id, storage_used_bytes, usage_version FROM tenant_rows
UNION ALL
SELECT 'p', id, NULL, storage_used_bytes, usage_version FROM project_rows
UNION ALL
SELECT 's', NULL, id, NULL, NULL FROM settled
UNION ALL
SELECT 'r', t.project_id, t.tenant_id, t.storage_used_bytes, t.usage_version
FROM unnest($22::text[], $23::text[]) AS k(project_id, tenant_id)
JOIN tenants t ON t.project_id = k.project_id AND t.tenant_id = k.tenant_id
UNION ALL
SELECT 'q', p.id, NULL, p.storage_used_bytes, p.usage_version
FROM projects p WHERE p.id = ANY($22::text[]);

-- name: tenant_objects
SELECT object_key, size_bytes, etag, present, sequencer, event_time
FROM objects WHERE project_id = $1 AND tenant_id = $2;

-- name: file_is_known
-- A stored object, or a pending upload (by its id, parsed from the key) for the key.
SELECT EXISTS (SELECT 1 FROM objects WHERE object_key = $1 AND present)
    OR EXISTS (SELECT 1 FROM uploads WHERE id = $2 AND object_key = $1 AND status = 'pending');

-- name: stored_file
SELECT o.size_bytes, u.content_type, u.filename
FROM objects o LEFT JOIN uploads u ON u.id = o.upload_id
WHERE o.object_key = $1 AND o.present;

-- name: tenant_ids
SELECT tenant_id FROM tenants WHERE project_id = $1 ORDER BY tenant_id;
