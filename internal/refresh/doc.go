// Package refresh keeps the materialized read models (db/materialized) fresh: the hybrid
// refresher.
//
// Every view has a cron schedule (robfig/cron, default "@every 1m") and is refreshed on each
// tick. Between ticks, the transition events of internal/events mark the views a write affects
// stale: in memory, to schedule a refresh, and in tasker_read_model_state, so every process
// and every client sees it. The first write after a refresh opens a debounce window (default
// 5 s); one refresh at its end covers every write in it, and event-triggered refreshes of one
// view start at least MinInterval apart, so a burst of writes costs one refresh.
//
// Guarantees:
//   - A view is refreshed with REFRESH MATERIALIZED VIEW CONCURRENTLY: readers of the view are
//     never blocked, and they see the old rows until the refresh commits.
//   - Refreshes of one view never overlap: within a process through a per-view lock (and
//     cron.SkipIfStillRunning for ticks); across processes through a transaction-level
//     advisory lock taken inside the refresh transaction. A refresher that does not get it
//     skips: another process is refreshing the view right now.
//   - Every refresh runs under a statement timeout (SET LOCAL statement_timeout).
//   - A refresh that fails is rolled back, logged and recorded (tasker_read_model_refreshes and
//     last_error), leaves the view as it was and stays stale, so the next tick retries it.
//   - A successful refresh clears the stale mark only when no write was seen after it started.
//   - At Start, and when the hub wakes subscribers after a (re)connection (writes may have been
//     missed), a view is marked stale and refreshed after the debounce only when it is not
//     known to be fresh. Fresh means: not marked stale, and its last refresh's data is as of a
//     time after the newest write to the tables it reads (an index-driven probe per table). A
//     server restarted on unchanged data refreshes nothing.
//
// Start and Stop are safe to call twice; Refresh runs an on-demand refresh and returns what
// happened. The dashboard reads themselves are in internal/models (ReadTaskStatusSummaries,
// ReadStepPerformance, ReadHourlyThroughput, ReadModelStatuses).
package refresh
