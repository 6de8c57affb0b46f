-- Named queries of the outbound webhooks (gateway/webhooks/). Parameters are $n only.

-- name: record_events
-- The outbox write, in the transaction of the change it tells of. Three sources:
-- events built by the caller ($1 ids, $2 project ids, $3 types, $4 JSON bodies); the
-- uploads this transaction settled ($5 ids: one event by each one's final status,
-- built here from its row); and the tenants whose settled usage or limit changed
-- ($6 project ids, $7 tenant ids, rows the caller holds locked), whose threshold
-- lines are judged here: a line reached that was not before is an event, a line no
-- longer reached is re-armed. An event is stored only when an enabled endpoint of
-- its project takes its type, with one pending delivery per such endpoint.
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        AS g(id, project_id, type, body)
),
settled AS (
    SELECT u.id, u.project_id, u.tenant_id, u.status, u.actual_size, u.declared_size,
           u.content_type, u.method, substr(u.object_key, length(u.project_id) + 2) AS file_path
    FROM uploads u
    WHERE u.id = ANY($5::text[])
      AND u.status IN ('completed', 'rejected', 'expired', 'cancelled')
),
judged AS (
    SELECT t.project_id, t.tenant_id, t.storage_used_bytes AS used, l.lim,
           t.thresholds_reached AS old,
           ARRAY(SELECT x FROM unnest(p.webhook_thresholds) AS x
                 WHERE l.lim IS NOT NULL
                   AND CASE WHEN l.lim = 0 THEN t.storage_used_bytes > 0
                            ELSE t.storage_used_bytes::numeric * 100 >= x::numeric * l.lim END
                 ORDER BY x)::smallint[] AS reached
    FROM unnest($6::text[], $7::text[]) AS k(project_id, tenant_id)
    JOIN tenants t ON t.project_id = k.project_id AND t.tenant_id = k.tenant_id
    JOIN projects p ON p.id = t.project_id
    CROSS JOIN LATERAL (
        SELECT CASE WHEN t.limit_set THEN t.storage_limit_bytes
                    ELSE p.default_tenant_limit_bytes END AS lim
    ) l
),
rearmed AS (
    UPDATE tenants t SET thresholds_reached = j.reached
    FROM judged j
    WHERE t.project_id = j.project_id AND t.tenant_id = j.tenant_id
      AND t.thresholds_reached <> j.reached
),
made AS (
    SELECT s.project_id,
           CASE s.status WHEN 'completed' THEN 'upload.completed'
                         WHEN 'rejected' THEN 'upload.rejected'
                         WHEN 'expired' THEN 'upload.expired'
                         ELSE 'upload.cancelled' END AS type,
           CASE WHEN s.status = 'completed' THEN jsonb_build_object(
                    'upload_id', s.id, 'tenant_id', s.tenant_id, 'file_path', s.file_path,
                    'size_bytes', s.actual_size, 'content_type', s.content_type,
                    'method', s.method)
                WHEN s.status = 'rejected' THEN jsonb_build_object(
                    'upload_id', s.id, 'tenant_id', s.tenant_id, 'file_path', s.file_path,
                    'size_bytes', s.actual_size, 'content_type', s.content_type,
                    'method', s.method, 'declared_size_bytes', s.declared_size,
                    'reason', 'larger_than_declared')
                ELSE jsonb_build_object(
                    'upload_id', s.id, 'tenant_id', s.tenant_id, 'file_path', s.file_path)
           END AS data
    FROM settled s
    UNION ALL
    SELECT j.project_id, 'tenant.quota.threshold',
           jsonb_build_object(
               'tenant_id', j.tenant_id, 'threshold_percent', x,
               'storage_used_bytes', j.used, 'storage_limit_bytes', j.lim,
               -- rounded half up to hundredths, exactly as gateway.limits.percentage
               'percentage_used',
               CASE WHEN j.lim = 0 THEN 100.0
                    ELSE round(div(j.used::numeric * 20000 + j.lim, 2 * j.lim::numeric) / 100, 2)
               END)
    FROM judged j CROSS JOIN LATERAL unnest(j.reached) AS x
    WHERE NOT (x = ANY (j.old))
),
events AS (
    SELECT g.id, g.project_id, g.type, g.body::jsonb AS body FROM given g
    UNION ALL
    SELECT 'evt_' || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
               || substr(md5(gen_random_uuid()::text), 1, 12),
           m.project_id, m.type,
           jsonb_build_object(
               'type', m.type,
               'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'data', m.data)
    FROM made m
),
targets AS (
    SELECT e.id AS event_id, w.id AS endpoint_id
    FROM events e
    JOIN webhook_endpoints w
      ON w.project_id = e.project_id AND w.enabled
     AND (e.type = ANY (w.events) OR '*' = ANY (w.events))
),
stored AS (
    INSERT INTO webhook_events (id, project_id, type, body)
    SELECT e.id, e.project_id, e.type, e.body FROM events e
    WHERE e.id IN (SELECT event_id FROM targets)
    RETURNING id
),
queued AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_id)
    SELECT endpoint_id, event_id FROM targets
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS events, (SELECT count(*) FROM queued) AS deliveries;

-- name: record_test_event
-- A webhook.test event for one endpoint, whatever it subscribes to.
WITH stored AS (
    INSERT INTO webhook_events (id, project_id, type, body)
    VALUES ($1, $2, 'webhook.test', $3::jsonb)
    RETURNING id
)
INSERT INTO webhook_deliveries (endpoint_id, event_id)
SELECT $4, id FROM stored;

-- name: lock_tenants_of_project
-- The tenants whose effective limit a project change may move ($2 true: all of
-- them; else those without a limit of their own), locked in one order.
SELECT tenant_id FROM tenants
WHERE project_id = $1 AND ($2 OR NOT limit_set)
ORDER BY tenant_id
FOR UPDATE;

-- name: set_project_thresholds
UPDATE projects SET webhook_thresholds = $2::smallint[], updated_at = now()
WHERE id = $1
RETURNING *;

-- name: insert_endpoint
INSERT INTO webhook_endpoints (id, project_id, url, events, description, secret)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: get_endpoint
SELECT * FROM webhook_endpoints WHERE id = $1 AND project_id = $2;

-- name: lock_endpoint
SELECT * FROM webhook_endpoints WHERE id = $1 AND project_id = $2 FOR UPDATE;

-- name: list_endpoints
SELECT *, count(*) OVER () AS total_count FROM webhook_endpoints
WHERE project_id = $1
ORDER BY created_at, id
OFFSET $2 LIMIT $3;

-- name: count_endpoints
SELECT count(*) FROM webhook_endpoints WHERE project_id = $1;

-- name: update_endpoint
-- $3..$6 apply where not NULL. Enabling clears the failure record.
UPDATE webhook_endpoints SET
    url = COALESCE($3, url),
    events = COALESCE($4, events),
    description = COALESCE($5, description),
    enabled = COALESCE($6, enabled),
    failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,
    disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END,
    updated_at = now()
WHERE id = $1 AND project_id = $2
RETURNING *;

-- name: rotate_secret
-- The new secret signs from now on; the old one beside it until $4.
UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $4, secret = $3,
                             updated_at = now()
WHERE id = $1 AND project_id = $2
RETURNING *;

-- name: delete_endpoint
DELETE FROM webhook_endpoints WHERE id = $1 AND project_id = $2 RETURNING *;

-- name: list_deliveries
-- An endpoint's deliveries, newest first; $2 status filter (NULL = any).
SELECT d.event_id, e.type, d.status, d.attempts, d.last_status_code, d.last_error,
       d.next_attempt_at, d.created_at, d.delivered_at, count(*) OVER () AS total_count
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2)
ORDER BY d.event_id DESC
OFFSET $3 LIMIT $4;

-- name: count_deliveries
SELECT count(*) FROM webhook_deliveries
WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2);

-- name: retry_delivery
-- Due now, with a fresh retry window; one in flight is left to its attempt.
UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(),
                                retry_since = now(), lease_until = NULL
FROM webhook_events e
WHERE d.endpoint_id = $1 AND d.event_id = $2 AND e.id = d.event_id
  AND NOT (d.status = 'pending' AND COALESCE(d.lease_until > now(), false))
RETURNING d.event_id, e.type, d.status, d.attempts, d.last_status_code, d.last_error,
          d.next_attempt_at, d.created_at, d.delivered_at;

-- name: get_delivery
SELECT d.event_id, e.type, d.status, d.attempts, d.last_status_code, d.last_error,
       d.next_attempt_at, d.created_at, d.delivered_at
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
WHERE d.endpoint_id = $1 AND d.event_id = $2;

-- name: claim_deliveries
-- Deliveries due now, at most $1 in all and at most $2 in flight per endpoint across
-- every worker: the endpoints' rows are locked (SKIP LOCKED: another worker's are
-- skipped, not waited for) while their deliveries in flight are counted and the
-- rest claimed. A claimed delivery is leased for $3 s (next_attempt_at moves past
-- its attempt): if its worker dies, it is claimed again after that.
-- Every lookup is an index probe per endpoint (LATERAL … LIMIT) and the rows are
-- updated by ctid, whatever the statistics say: a queue's size swings faster than
-- ANALYZE follows, and a plan made for "a few rows" (hashing every pending row)
-- costs each claim a scan of the backlog.
WITH ep AS (
    SELECT w.id FROM webhook_endpoints w
    CROSS JOIN LATERAL (
        SELECT 1 FROM webhook_deliveries d
        WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()
        LIMIT 1
    ) due
    WHERE w.enabled
    ORDER BY random()
    LIMIT 200
    FOR UPDATE OF w SKIP LOCKED
),
room AS (
    SELECT ep.id, $2 - (SELECT count(*) FROM webhook_deliveries d
                        WHERE d.endpoint_id = ep.id AND d.status = 'pending'
                          AND d.lease_until IS NOT NULL AND d.lease_until > now()) AS free
    FROM ep
),
picked AS (
    SELECT p.ctid
    FROM room CROSS JOIN LATERAL (
        SELECT d.ctid FROM webhook_deliveries d
        WHERE d.endpoint_id = room.id AND d.status = 'pending' AND d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT GREATEST(room.free, 0)
    ) p
    LIMIT $1
),
claimed AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1,
        lease_until = now() + make_interval(secs => $3),
        next_attempt_at = now() + make_interval(secs => $3)
    WHERE d.ctid = ANY (ARRAY(SELECT ctid FROM picked))
      AND d.status = 'pending' AND d.next_attempt_at <= now()
    RETURNING d.endpoint_id, d.event_id, d.attempts, d.retry_since
)
SELECT c.endpoint_id, c.event_id, c.attempts, c.retry_since, e.body::text AS body, w.url,
       w.secret, CASE WHEN w.previous_until > now() THEN w.previous_secret END AS previous_secret
FROM claimed c
JOIN webhook_events e ON e.id = c.event_id
JOIN webhook_endpoints w ON w.id = c.endpoint_id;

-- name: finish_attempts
-- The outcomes of attempts: $3 'delivered', 'retry' (due again at $6) or 'failed'
-- (given up), with the answer's status code ($4) or what went wrong ($5). Only a
-- delivery still pending is changed. An endpoint's failure streak starts at its
-- first failure and ends at its next success. The rows are found by primary key
-- and updated by ctid (see claim_deliveries on statistics).
WITH r AS (
    SELECT r.*, x.ctid AS row_ctid
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                $6::timestamptz[]) AS r(endpoint_id, event_id, outcome, code, error, next_at)
    CROSS JOIN LATERAL (
        SELECT d.ctid FROM webhook_deliveries d
        WHERE d.endpoint_id = r.endpoint_id AND d.event_id = r.event_id
        LIMIT 1
    ) x
),
done AS (
    UPDATE webhook_deliveries d SET
        status = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
        last_status_code = r.code,
        last_error = r.error,
        next_attempt_at = COALESCE(r.next_at, d.next_attempt_at),
        lease_until = NULL,
        delivered_at = CASE WHEN r.outcome = 'delivered' THEN now() END
    FROM r
    WHERE d.ctid = ANY (ARRAY(SELECT row_ctid FROM r))
      AND d.endpoint_id = r.endpoint_id AND d.event_id = r.event_id AND d.status = 'pending'
    RETURNING d.endpoint_id, r.outcome
),
streaks AS (
    SELECT endpoint_id, bool_or(outcome = 'delivered') AS ok FROM done GROUP BY endpoint_id
)
UPDATE webhook_endpoints w
SET failing_since = CASE WHEN s.ok THEN NULL ELSE now() END
FROM streaks s
WHERE w.id = s.endpoint_id AND (w.failing_since IS NULL) <> s.ok;

-- name: disable_failing
-- Endpoints whose every attempt has failed for $1 seconds, disabled.
UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'failing',
                             updated_at = now()
WHERE enabled AND failing_since < now() - make_interval(secs => $1)
RETURNING id, project_id, url, failing_since;

-- name: queue_stats
-- (the oldest by event id: ids are time-ordered, and the due index covers pending)
SELECT count(*) AS pending,
       COALESCE(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age
FROM webhook_deliveries WHERE status = 'pending';

-- name: prune_events
-- Events older than $1 seconds whose deliveries are all finished, $2 at a time (by
-- id: evt_<12 hex digits of ms> sorts by time).
DELETE FROM webhook_events WHERE id IN (
    SELECT e.id FROM webhook_events e
    WHERE e.id < 'evt_' || lpad(to_hex(
              (extract(epoch FROM now() - make_interval(secs => $1)) * 1000)::bigint), 12, '0')
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                      WHERE d.event_id = e.id AND d.status = 'pending')
    ORDER BY e.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);
