-- +goose Up
-- The dashboards become incremental read models: aggregate tables updated by the refresher
-- (internal/refresh) with what changed since their last refresh, so a refresh costs the
-- change, not the history. The view names of the three dashboards stay; each is now a plain
-- view over its aggregate tables, and the exact definitions stay available as
-- <name>_exact views (a full scan: for tests and admin checks only).
--
-- Change tracking. tasker_tasks and both transition tables get created_xid, the id of the
-- transaction that inserted the row (pg_current_xact_id(), the same for every row of one
-- transaction), indexed. tasker_read_model_state.processed_xid is each read model's horizon:
-- every row whose created_xid is below it has been folded in, and no row at or above it.
-- A refresh reads the horizon H = pg_snapshot_xmin(pg_current_snapshot()) (every transaction
-- below H has ended, committed or not, so its rows are all visible or gone for good), folds in
-- the rows with processed_xid <= created_xid < H and stores H. Each transaction's rows are
-- therefore folded in exactly once, whatever order ids were assigned or transactions
-- committed in. Rows inserted before this migration have a NULL created_xid; the first
-- refresh of each read model (processed_xid NULL) folds in the NULL rows and those below H.

ALTER TABLE tasker_tasks ADD COLUMN created_xid xid8;
ALTER TABLE tasker_tasks ALTER COLUMN created_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX tasker_tasks_created_xid_idx ON tasker_tasks (created_xid);
ALTER TABLE tasker_task_transitions ADD COLUMN created_xid xid8;
ALTER TABLE tasker_task_transitions ALTER COLUMN created_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX tasker_task_transitions_created_xid_idx ON tasker_task_transitions (created_xid);
ALTER TABLE tasker_workflow_step_transitions ADD COLUMN created_xid xid8;
ALTER TABLE tasker_workflow_step_transitions ALTER COLUMN created_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX tasker_workflow_step_transitions_created_xid_idx ON tasker_workflow_step_transitions (created_xid);

ALTER TABLE tasker_read_model_state ADD COLUMN processed_xid xid8;

-- Durations histograms. Bucket 0 holds exactly 0 ms; bucket b >= 1 holds the durations in
-- [0.001 * 1.02^(b-1), 0.001 * 1.02^b) ms, bucket -b their negatives (timestamps have
-- microsecond resolution, so every other duration is at least 0.001 ms in size). A bucket
-- reads as its geometric midpoint 0.001 * 1.02^(b-0.5): within a relative error of
-- sqrt(1.02) - 1 < 1% of every duration in it.
-- +goose StatementBegin
CREATE FUNCTION tasker_rm_duration_bucket(ms numeric) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ms = 0 THEN 0
                ELSE sign(ms)::integer * (1 + floor(ln(abs(ms)::double precision / 0.001) / ln(1.02))::integer)
           END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE FUNCTION tasker_rm_bucket_ms(bucket integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN bucket = 0 THEN 0::double precision
                ELSE sign(bucket) * 0.001 * power(1.02::double precision, abs(bucket) - 0.5)
           END
$$;
-- +goose StatementEnd

-- tasker_task_status_summaries: the current state of every task seen (the transition with
-- the highest sort_key folded in so far) and, per named task, the counts by state. Counts
-- only move by the transitions folded in: deleting tasks never subtracts.
CREATE TABLE tasker_rm_task_states (
    task_id       bigint      PRIMARY KEY,
    named_task_id bigint      NOT NULL,
    state         varchar(32) NOT NULL,
    sort_key      integer     NOT NULL,
    requested_at  timestamptz NOT NULL,
    state_since   timestamptz
);
CREATE INDEX tasker_rm_task_states_pending_idx ON tasker_rm_task_states (named_task_id, requested_at)
    WHERE state = 'pending';
CREATE INDEX tasker_rm_task_states_in_progress_idx ON tasker_rm_task_states (named_task_id, state_since)
    WHERE state = 'in_progress';

CREATE TABLE tasker_rm_task_counts (
    named_task_id           bigint PRIMARY KEY,
    pending_count           bigint NOT NULL DEFAULT 0,
    in_progress_count       bigint NOT NULL DEFAULT 0,
    complete_count          bigint NOT NULL DEFAULT 0,
    error_count             bigint NOT NULL DEFAULT 0,
    cancelled_count         bigint NOT NULL DEFAULT 0,
    resolved_manually_count bigint NOT NULL DEFAULT 0,
    total_count             bigint NOT NULL DEFAULT 0
);

-- tasker_step_performance: counters, the exact sum and max of durations, and the
-- histogram from which p50 and p95 are computed at refresh time (internal/refresh):
-- interpolated like percentile_cont between the bucket values of the two ranks around
-- p * (n - 1), so within 1% (relative) of the exact percentile_cont.
CREATE TABLE tasker_rm_step_performance (
    task_namespace_id bigint  NOT NULL,
    named_step_id     bigint  NOT NULL,
    executions        bigint  NOT NULL DEFAULT 0,
    successes         bigint  NOT NULL DEFAULT 0,
    failures          bigint  NOT NULL DEFAULT 0,
    retries           bigint  NOT NULL DEFAULT 0,
    finished_runs     bigint  NOT NULL DEFAULT 0,
    duration_sum_ms   numeric NOT NULL DEFAULT 0,
    max_duration_ms   double precision,
    p50_duration_ms   double precision,
    p95_duration_ms   double precision,
    PRIMARY KEY (task_namespace_id, named_step_id)
);

CREATE TABLE tasker_rm_step_durations (
    task_namespace_id bigint  NOT NULL,
    named_step_id     bigint  NOT NULL,
    bucket            integer NOT NULL,
    runs              bigint  NOT NULL,
    PRIMARY KEY (task_namespace_id, named_step_id, bucket)
);

-- tasker_hourly_throughput: counters per UTC hour.
CREATE TABLE tasker_rm_hourly_throughput (
    hour            timestamptz PRIMARY KEY,
    tasks_created   bigint NOT NULL DEFAULT 0,
    tasks_completed bigint NOT NULL DEFAULT 0,
    tasks_failed    bigint NOT NULL DEFAULT 0,
    steps_completed bigint NOT NULL DEFAULT 0,
    steps_failed    bigint NOT NULL DEFAULT 0
);

-- The exact aggregates: the released materialized definitions (db/materialized/*_v01.sql),
-- as plain views computed at read time.
-- +goose StatementBegin
DO $$
DECLARE
    v text;
BEGIN
    FOREACH v IN ARRAY ARRAY['tasker_task_status_summaries', 'tasker_step_performance', 'tasker_hourly_throughput'] LOOP
        EXECUTE format('ALTER MATERIALIZED VIEW %I RENAME TO %I', v, v || '_mv');
        EXECUTE format('CREATE VIEW %I AS %s', v || '_exact', pg_get_viewdef((v || '_mv')::regclass));
    END LOOP;
END
$$;
-- +goose StatementEnd

DROP MATERIALIZED VIEW tasker_task_status_summaries_mv;
DROP MATERIALIZED VIEW tasker_step_performance_mv;
DROP MATERIALIZED VIEW tasker_hourly_throughput_mv;

-- The dashboards, read by internal/models: a few index probes whatever the history's size.
-- Named tasks and names are joined live; the oldest pending / in-progress times come from
-- the partial indexes of tasker_rm_task_states.
CREATE VIEW tasker_task_status_summaries AS
SELECT nt.named_task_id, nt.task_namespace_id,
       ns.name::varchar(64) AS namespace_name, nt.name::varchar(64) AS task_name, nt.version::varchar(32) AS version,
       coalesce(c.pending_count, 0)           AS pending_count,
       coalesce(c.in_progress_count, 0)       AS in_progress_count,
       coalesce(c.complete_count, 0)          AS complete_count,
       coalesce(c.error_count, 0)             AS error_count,
       coalesce(c.cancelled_count, 0)         AS cancelled_count,
       coalesce(c.resolved_manually_count, 0) AS resolved_manually_count,
       coalesce(c.total_count, 0)             AS total_count,
       (SELECT min(s.requested_at) FROM tasker_rm_task_states s
        WHERE s.named_task_id = nt.named_task_id AND s.state = 'pending') AS oldest_pending_requested_at,
       (SELECT min(s.state_since) FROM tasker_rm_task_states s
        WHERE s.named_task_id = nt.named_task_id AND s.state = 'in_progress') AS oldest_in_progress_since
FROM tasker_named_tasks nt
JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
LEFT JOIN tasker_rm_task_counts c ON c.named_task_id = nt.named_task_id;

CREATE VIEW tasker_step_performance AS
SELECT p.task_namespace_id, p.named_step_id,
       ns.name::varchar(64) AS namespace_name, nstep.name::varchar(128) AS step_name,
       ds.name::varchar(64) AS dependent_system_name,
       p.executions, p.successes, p.failures, p.retries,
       CASE WHEN p.executions = 0 THEN 0
            ELSE round(p.failures::numeric / p.executions, 4)::double precision
       END AS error_rate,
       (p.duration_sum_ms / nullif(p.finished_runs, 0))::double precision AS avg_duration_ms,
       p.p50_duration_ms, p.p95_duration_ms, p.max_duration_ms
FROM tasker_rm_step_performance p
JOIN tasker_task_namespaces ns ON ns.task_namespace_id = p.task_namespace_id
JOIN tasker_named_steps nstep ON nstep.named_step_id = p.named_step_id
JOIN tasker_dependent_systems ds ON ds.dependent_system_id = nstep.dependent_system_id;

CREATE VIEW tasker_hourly_throughput AS
SELECT hour, tasks_created, tasks_completed, tasks_failed, steps_completed, steps_failed
FROM tasker_rm_hourly_throughput;

-- Without history (a new database) every read model is complete as it is: its horizon is
-- the oldest running transaction (any later row gets a created_xid at or above it). With
-- history nothing is folded in yet: every read model is stale until its first refresh.
UPDATE tasker_read_model_state
SET processed_xid = pg_snapshot_xmin(pg_current_snapshot())
WHERE name IN ('tasker_task_status_summaries', 'tasker_step_performance', 'tasker_hourly_throughput')
  AND NOT EXISTS (SELECT 1 FROM tasker_tasks)
  AND NOT EXISTS (SELECT 1 FROM tasker_task_transitions)
  AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_transitions);
UPDATE tasker_read_model_state
SET processed_xid = NULL, last_data_as_of = NULL, stale_since = coalesce(stale_since, now()), marked_at = now()
WHERE name IN ('tasker_task_status_summaries', 'tasker_step_performance', 'tasker_hourly_throughput')
  AND (EXISTS (SELECT 1 FROM tasker_tasks)
    OR EXISTS (SELECT 1 FROM tasker_task_transitions)
    OR EXISTS (SELECT 1 FROM tasker_workflow_step_transitions));

-- +goose Down
DROP VIEW tasker_task_status_summaries, tasker_step_performance, tasker_hourly_throughput;
-- +goose StatementBegin
DO $$
DECLARE
    v text;
BEGIN
    FOREACH v IN ARRAY ARRAY['tasker_task_status_summaries', 'tasker_step_performance', 'tasker_hourly_throughput'] LOOP
        EXECUTE format('CREATE MATERIALIZED VIEW %I AS %s', v, pg_get_viewdef((v || '_exact')::regclass));
        EXECUTE format('DROP VIEW %I', v || '_exact');
    END LOOP;
END
$$;
-- +goose StatementEnd
CREATE UNIQUE INDEX tasker_task_status_summaries_named_task_idx ON tasker_task_status_summaries (named_task_id);
CREATE INDEX tasker_task_status_summaries_namespace_idx
    ON tasker_task_status_summaries (namespace_name, task_name, version);
CREATE UNIQUE INDEX tasker_step_performance_namespace_step_idx ON tasker_step_performance (task_namespace_id, named_step_id);
CREATE INDEX tasker_step_performance_namespace_name_idx ON tasker_step_performance (namespace_name, executions DESC);
CREATE UNIQUE INDEX tasker_hourly_throughput_hour_idx ON tasker_hourly_throughput (hour);
DROP TABLE tasker_rm_task_states, tasker_rm_task_counts, tasker_rm_step_performance, tasker_rm_step_durations,
    tasker_rm_hourly_throughput;
DROP FUNCTION tasker_rm_duration_bucket(numeric), tasker_rm_bucket_ms(integer);
ALTER TABLE tasker_read_model_state DROP COLUMN processed_xid;
ALTER TABLE tasker_workflow_step_transitions DROP COLUMN created_xid;
ALTER TABLE tasker_task_transitions DROP COLUMN created_xid;
ALTER TABLE tasker_tasks DROP COLUMN created_xid;
