-- The ledger writes a key's tenant row before its object row, in the same
-- transaction (ensure_tenants), and tenants are never deleted apart from their
-- project. The foreign key only added a check per written object row (a KEY SHARE
-- lock on the tenant row, about half the cost of inserting a new key; bench_events).
-- uploads has none for the same reason.
ALTER TABLE objects DROP CONSTRAINT IF EXISTS objects_project_id_tenant_id_fkey;
