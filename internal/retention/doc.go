// Package retention bounds the history: it deletes finished tasks older than their
// namespace's retention period, with their steps, edges, transitions and annotations, in
// small batches run by a cron schedule (robfig/cron).
//
// Guarantees:
//   - Only finished tasks are deleted: the task's current state is complete, cancelled or
//     resolved_manually, it entered that state before now - the period, and none of its steps
//     is pending, in progress, in error or claimed by a worker. The check is made again inside
//     the deleting statement, after the task's and its steps' rows are locked (every
//     transition of a task or step locks that row first), so work that resumes meanwhile
//     keeps its task.
//   - The engine is never blocked for long: each batch is one short transaction over at most
//     BatchSize tasks, which skips tasks locked by someone else (FOR UPDATE SKIP LOCKED) and
//     gives up on a step lock after LockTimeout (the batch is retried on the next run).
//   - A run leaves the database to the engine for part of its time: after each batch that
//     took d and left work, it waits d*(100-Duty)/Duty (Config.Duty, TASKER_RETENTION_DUTY,
//     default 50 %), and a run stopped meanwhile keeps what it deleted.
//   - The dashboards keep their aggregates for the deleted period: a task is deleted only
//     once every read model has folded in all of its rows (their created_xid is below every
//     read model's horizon, see internal/refresh), and the aggregate tables do not reference
//     the deleted rows.
//   - Namespaces without a period, and every namespace by default, keep their tasks forever.
//   - Runs never overlap within a process (cron.SkipIfStillRunning), and across processes a
//     run takes a session advisory lock and skips when another process holds it.
//
// The statements (the run lock, the candidates, the locks and the deletion) are methods of
// store.Store (internal/store/retention.go); a policy that cannot be used is an errs.Invalid
// error.
package retention
