// Package refresh keeps the dashboard read models fresh: the hybrid refresher of the
// incremental aggregates behind tasker_task_status_summaries, tasker_step_performance and
// tasker_hourly_throughput.
//
// Every view has a cron schedule (robfig/cron, default "@every 1m") and is refreshed on each
// tick. Between ticks, the transition events of internal/events mark the views a write affects
// stale: in memory, to schedule a refresh, and in tasker_read_model_state, so every process
// and every client sees it. The first write after a refresh opens a debounce window (default
// 5 s); one refresh at its end covers every write in it, and event-triggered refreshes of one
// view start at least MinInterval apart, so a burst of writes costs one refresh.
//
// The read models are incremental (db/migrations/00031_incremental_read_models.sql): each
// dashboard view reads aggregate tables (tasker_rm_*) that a refresh updates with what changed
// since the previous one, so a refresh costs the change, not the history. The change is
// tracked by transaction: tasks and transitions carry created_xid, and each read model a
// horizon (tasker_read_model_state.processed_xid). A refresh takes a new horizon H, the oldest
// transaction of this database running at its snapshot (transactions of other databases of
// the cluster are left out), folds in the rows with old horizon <= created_xid < H and stores
// H. Every transaction below H has ended, so each transaction's rows are folded in by exactly
// one refresh, whatever order their ids were assigned or they committed in. Committed rows at
// or above H (a younger transaction ended while an older one still runs) wait for the next
// refresh; the refresh reports them (Outcome.Pending), keeps the read model stale and
// schedules another refresh. A transaction that stays open in this database therefore holds
// the read models back (never wrong, only stale) until it ends. Counts, sums and maxima are
// exact; p50 and p95 come from duration histograms with log-scale buckets 2% wide, read at
// their geometric midpoints, and are within 1% (relative) of the exact percentile_cont. The
// exact definitions remain as the views <name>_exact (full scans; for tests and checks).
//
// Guarantees:
//   - A refresh is one transaction: readers of a dashboard never wait for it, and see the
//     previous aggregates until it commits.
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
// happened. The refresh's statements (the fold-in of each view, the locks, the freshness and
// the refresh log) are methods of store.Store (internal/store/refresh.go); this package holds
// when and why they run. The dashboard reads themselves are in internal/models
// (ReadTaskStatusSummaries, ReadStepPerformance, ReadHourlyThroughput, ReadModelStatuses).
package refresh
