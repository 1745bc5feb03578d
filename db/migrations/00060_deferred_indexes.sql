-- +goose Up
-- Secondary indexes set aside during a bulk load (internal/indexes): a large `tasker seed`
-- into a nearly empty database drops the non-unique indexes of the tables it fills and builds
-- them again once the rows are in, which costs a fraction of maintaining them row by row. Each
-- dropped index is recorded here, in the transaction that drops it, with the statement that
-- builds it again; the row is deleted in the transaction that builds it. A load that dies
-- half-way therefore leaves its indexes listed here, and the next `tasker migrate`, `serve`,
-- `worker` or `seed` builds them before doing anything else. Only indexes that enforce
-- nothing (no primary key, unique or exclusion constraint) are ever dropped, so the data stays
-- exactly as constrained while they are away; only queries that need them run slower.
CREATE TABLE tasker_deferred_indexes (
    index_name  text PRIMARY KEY,
    table_name  text NOT NULL,
    definition  text NOT NULL,
    deferred_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE tasker_deferred_indexes;
