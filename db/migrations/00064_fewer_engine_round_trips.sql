-- +goose Up
-- Two statements the engine ran as round trips of their own now run in the database.
--
-- 1. A task's `complete` flag follows its move to complete. Settling a task (the only writer
--    of that move: SEMANTICS, task transitions) used to flag it with an UPDATE of its own
--    after writing the move; the task transitions' statement trigger now does it for every
--    writer, in the inserting statement. A bulk load (tasker.bulk_load on, no trigger of its
--    own fires) writes the flag with the rows, as before.
-- +goose StatementBegin
CREATE FUNCTION tasker_mark_completed_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasker_tasks t
    SET complete = true, updated_at = now()
    WHERE t.task_id IN (SELECT n.task_id FROM new_task_states n WHERE n.to_state = 'complete')
      AND NOT t.complete;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_task_transitions_mark_complete
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_task_states
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_mark_completed_tasks();
ALTER TABLE tasker_task_transitions ENABLE ALWAYS TRIGGER tasker_task_transitions_mark_complete;

-- 2. Locking the tasks a claim starts and reading their current transitions is one call. The
--    read must come after the locks: a transition committed by the lock's previous holder
--    after the statement that locks began is invisible to that statement, so one statement
--    cannot do both. A VOLATILE function runs each of its statements with a snapshot of its
--    own, taken when the statement starts, so its second statement sees every transition
--    committed before the locks were taken. Tasks held by another transaction are skipped,
--    not waited for (the claim already holds step locks, and the lock order is task, then
--    step). It returns, for each task it locked, in id order, its current state (null: no
--    transition yet, pending) and the last sort key of its history (0 when it has none), as
--    the state machine reads them (store.OwnerStates).
-- +goose StatementBegin
CREATE FUNCTION tasker_lock_tasks_skip_locked(ids bigint[])
RETURNS TABLE (task_id bigint, to_state varchar, sort_key integer)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- ids becomes the tasks locked here, in id order.
    SELECT coalesce(array_agg(l.task_id ORDER BY l.task_id), '{}') INTO ids
    FROM (SELECT t.task_id FROM tasker_tasks t WHERE t.task_id = ANY(ids)
          ORDER BY t.task_id FOR NO KEY UPDATE SKIP LOCKED) l;
    RETURN QUERY
    SELECT o.id,
           (SELECT tt.to_state FROM tasker_task_transitions tt WHERE tt.task_id = o.id AND tt.most_recent),
           (SELECT coalesce(max(tt.sort_key), 0) FROM tasker_task_transitions tt WHERE tt.task_id = o.id)
    FROM unnest(ids) WITH ORDINALITY AS o(id, ord)
    ORDER BY o.ord;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tasker_lock_tasks_skip_locked(bigint[]);
DROP TRIGGER tasker_task_transitions_mark_complete ON tasker_task_transitions;
DROP FUNCTION tasker_mark_completed_tasks();
