package models

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
)

// The dashboard read models and their freshness records. Each dashboard is a view over
// incremental aggregate tables (tasker_rm_*, db/migrations/00031_incremental_read_models.sql)
// that only the refresher (internal/refresh) writes; a read is a few index probes whatever the
// history's size. Like the live view models they are read-only: the freshness tables are
// written only by the refresher and the migrations.

// TaskStatusSummary is one row of tasker_task_status_summaries: the tasks of one named task
// by current state. Ages are not stored; compute them at read time with the Oldest* methods.
type TaskStatusSummary struct {
	readOnly                 `gorm:"-"`
	NamedTaskID              int64 `gorm:"primaryKey"`
	TaskNamespaceID          int64
	NamespaceName            string
	TaskName                 string
	Version                  string
	PendingCount             int64
	InProgressCount          int64
	CompleteCount            int64
	ErrorCount               int64
	CancelledCount           int64
	ResolvedManuallyCount    int64
	TotalCount               int64
	OldestPendingRequestedAt *time.Time
	OldestInProgressSince    *time.Time
}

func (TaskStatusSummary) TableName() string { return "tasker_task_status_summaries" }

// OldestPendingAge is how long the oldest pending task has waited at now (nil when none is
// pending). Never negative.
func (s TaskStatusSummary) OldestPendingAge(now time.Time) *time.Duration {
	return ageAt(s.OldestPendingRequestedAt, now)
}

// OldestInProgressAge is how long the oldest in-progress task has been in progress at now
// (nil when none is in progress). Never negative.
func (s TaskStatusSummary) OldestInProgressAge(now time.Time) *time.Duration {
	return ageAt(s.OldestInProgressSince, now)
}

func ageAt(since *time.Time, now time.Time) *time.Duration {
	if since == nil {
		return nil
	}
	d := now.Sub(*since)
	if d < 0 {
		d = 0
	}
	return &d
}

// StepPerformance is one row of tasker_step_performance: the history of one named step's
// executions within one namespace. Durations are in milliseconds, nil when no execution
// has finished.
type StepPerformance struct {
	readOnly            `gorm:"-"`
	TaskNamespaceID     int64 `gorm:"primaryKey"`
	NamedStepID         int64 `gorm:"primaryKey"`
	NamespaceName       string
	StepName            string
	DependentSystemName string
	Executions          int64
	Successes           int64
	Failures            int64
	Retries             int64
	ErrorRate           float64
	AvgDurationMs       *float64
	P50DurationMs       *float64
	P95DurationMs       *float64
	MaxDurationMs       *float64
}

func (StepPerformance) TableName() string { return "tasker_step_performance" }

// HourlyThroughput is one row of tasker_hourly_throughput: what happened in one UTC hour.
type HourlyThroughput struct {
	readOnly       `gorm:"-"`
	Hour           time.Time `gorm:"primaryKey"`
	TasksCreated   int64
	TasksCompleted int64
	TasksFailed    int64
	StepsCompleted int64
	StepsFailed    int64
}

func (HourlyThroughput) TableName() string { return "tasker_hourly_throughput" }

// ReadModelState is one row of tasker_read_model_state: the freshness of one materialized
// read model, shared by every process.
type ReadModelState struct {
	readOnly        `gorm:"-"`
	Name            string `gorm:"primaryKey"`
	StaleSince      *time.Time
	MarkedAt        *time.Time
	LastRefreshedAt *time.Time
	LastDataAsOf    *time.Time
	LastDurationMs  *float64
	LastRowCount    *int64
	LastAttemptAt   *time.Time
	LastError       *string
}

func (ReadModelState) TableName() string { return "tasker_read_model_state" }

// ReadModelRefresh is one row of tasker_read_model_refreshes, the log of refreshes that ran.
// Error is nil and RowCount set for a success; the reverse for a failure.
type ReadModelRefresh struct {
	readOnly    `gorm:"-"`
	ID          int64 `gorm:"primaryKey"`
	ViewName    string
	Trigger     string
	StartedAt   time.Time
	FinishedAt  time.Time
	DurationMs  float64
	RowCount    *int64
	Error       *string
	RefreshedBy string
}

func (ReadModelRefresh) TableName() string { return "tasker_read_model_refreshes" }

// ReadModelStatus is what a client needs to judge one read model's freshness.
type ReadModelStatus struct {
	Name string
	// LastRefreshedAt is when the last successful refresh finished (nil: never). The data
	// reflects the database as of DataAsOf, when that refresh started.
	LastRefreshedAt *time.Time
	DataAsOf        *time.Time
	// LastDurationMs is the duration of the last successful refresh.
	LastDurationMs *float64
	RowCount       *int64
	// Stale is true when a write that affects the view was seen after the last successful
	// refresh started; StaleSince is the first such write's mark.
	Stale      bool
	StaleSince *time.Time
	// LastError is the error of the latest refresh attempt, nil when it succeeded.
	LastError     *string
	LastAttemptAt *time.Time
}

// ReadModelStatuses lists every materialized read model with its freshness, by name, in one
// statement.
func ReadModelStatuses(ctx context.Context, db *gorm.DB) ([]ReadModelStatus, error) {
	var rows []ReadModelState
	if err := db.WithContext(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading read model states: %w", err)
	}
	out := make([]ReadModelStatus, len(rows))
	for i, r := range rows {
		out[i] = r.status()
	}
	return out, nil
}

func (r ReadModelState) status() ReadModelStatus {
	return ReadModelStatus{
		Name:            r.Name,
		LastRefreshedAt: r.LastRefreshedAt,
		DataAsOf:        r.LastDataAsOf,
		LastDurationMs:  r.LastDurationMs,
		RowCount:        r.LastRowCount,
		Stale:           r.StaleSince != nil,
		StaleSince:      r.StaleSince,
		LastError:       r.LastError,
		LastAttemptAt:   r.LastAttemptAt,
	}
}

// Freshness says how fresh the rows of one dashboard read are: they come from the view's
// last successful refresh.
type Freshness struct {
	// RefreshedAt is when the refresh that produced the rows finished (nil: never refreshed).
	RefreshedAt *time.Time
	// Stale is true when writes were seen since that refresh started.
	Stale bool
}

// TaskStatusSummaries is the result of ReadTaskStatusSummaries.
type TaskStatusSummaries struct {
	Rows []TaskStatusSummary
	Freshness
}

// StepPerformances is the result of ReadStepPerformance.
type StepPerformances struct {
	Rows []StepPerformance
	Freshness
}

// HourlyThroughputs is the result of ReadHourlyThroughput.
type HourlyThroughputs struct {
	Rows []HourlyThroughput
	Freshness
}

// Limits of the dashboard reads.
const (
	MaxStepPerformanceLimit = 1000
	MaxThroughputHours      = 24 * 366
)

// ReadTaskStatusSummaries reads the task status summaries, of one namespace or of all when
// namespace is "", ordered by namespace, task name and version. It runs two statements: the
// rows from tasker_task_status_summaries and the view's freshness.
func ReadTaskStatusSummaries(ctx context.Context, db *gorm.DB, namespace string) (TaskStatusSummaries, error) {
	var out TaskStatusSummaries
	q := db.WithContext(ctx).Order("namespace_name, task_name, version")
	if namespace != "" {
		q = q.Where("namespace_name = ?", namespace)
	}
	err := withFreshness(ctx, db, TaskStatusSummary{}.TableName(), &out.Freshness,
		"reading task status summaries", q.Find(&out.Rows).Error)
	return out, err
}

// ReadStepPerformance reads at most limit (1..MaxStepPerformanceLimit) step performance rows,
// of one namespace or of all when namespace is "", busiest first (most executions, then by
// namespace and step name). Two statements: the rows and the view's freshness. A limit out of
// range is an errs.Invalid error and reads nothing.
func ReadStepPerformance(ctx context.Context, db *gorm.DB, namespace string, limit int) (StepPerformances, error) {
	var out StepPerformances
	if limit < 1 || limit > MaxStepPerformanceLimit {
		return out, errs.E(errs.Invalid, "bad dashboard input: limit %d is out of range 1..%d", limit, MaxStepPerformanceLimit)
	}
	q := db.WithContext(ctx).Order("executions DESC, namespace_name, step_name, named_step_id").Limit(limit)
	if namespace != "" {
		q = q.Where("namespace_name = ?", namespace)
	}
	err := withFreshness(ctx, db, StepPerformance{}.TableName(), &out.Freshness,
		"reading step performance", q.Find(&out.Rows).Error)
	return out, err
}

// ReadHourlyThroughput reads the last hours (1..MaxThroughputHours) UTC hours, the current one
// included, oldest first, one row per hour: hours without activity read as zeros. Two
// statements: the rows and the view's freshness. hours out of range is an errs.Invalid error
// and reads nothing.
func ReadHourlyThroughput(ctx context.Context, db *gorm.DB, hours int) (HourlyThroughputs, error) {
	var out HourlyThroughputs
	if hours < 1 || hours > MaxThroughputHours {
		return out, errs.E(errs.Invalid, "bad dashboard input: hours %d is out of range 1..%d", hours, MaxThroughputHours)
	}
	err := db.WithContext(ctx).Raw(`
		SELECT s.hour,
		       coalesce(h.tasks_created, 0)   AS tasks_created,
		       coalesce(h.tasks_completed, 0) AS tasks_completed,
		       coalesce(h.tasks_failed, 0)    AS tasks_failed,
		       coalesce(h.steps_completed, 0) AS steps_completed,
		       coalesce(h.steps_failed, 0)    AS steps_failed
		FROM generate_series(date_trunc('hour', now(), 'UTC') - make_interval(hours => ?),
		                     date_trunc('hour', now(), 'UTC'), interval '1 hour') AS s(hour)
		LEFT JOIN tasker_hourly_throughput h ON h.hour = s.hour
		ORDER BY s.hour`, hours-1).Scan(&out.Rows).Error
	err = withFreshness(ctx, db, HourlyThroughput{}.TableName(), &out.Freshness, "reading hourly throughput", err)
	return out, err
}

// withFreshness completes the read of a dashboard's rows, which ended with rowsErr: a failed
// read is wrapped with doing (what was read); a read that succeeded is followed by the read of
// view's freshness into f (the second statement).
func withFreshness(ctx context.Context, db *gorm.DB, view string, f *Freshness, doing string, rowsErr error) error {
	if rowsErr != nil {
		return fmt.Errorf("%s: %w", doing, rowsErr)
	}
	var st ReadModelState
	if err := db.WithContext(ctx).Where("name = ?", view).Limit(1).Find(&st).Error; err != nil {
		return fmt.Errorf("reading freshness of %s: %w", view, err)
	}
	*f = Freshness{RefreshedAt: st.LastRefreshedAt, Stale: st.StaleSince != nil}
	return nil
}
