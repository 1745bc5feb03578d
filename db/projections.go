package db

import (
	"fmt"
	"io/fs"
	"strings"
)

// Kind says how a projection's rows are kept.
type Kind int

const (
	// LiveView: a view computed at read time, always exact (docs/SEMANTICS.md §3-6). The hot
	// paths read these, filtered by task or step so that a read costs what the task costs.
	LiveView Kind = iota + 1
	// MaterializedView: a dashboard read model kept by the refresher (internal/refresh), which
	// records its freshness in tasker_read_model_state. Each was released as a materialized
	// view (db/materialized); it is now a plain view over aggregate tables that the refresher
	// updates with what changed (Refresh.Definition), and the released definition lives on as
	// the view <name>_exact.
	MaterializedView
)

func (k Kind) String() string {
	switch k {
	case LiveView:
		return "live"
	case MaterializedView:
		return "materialized"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// The projections, by name.
const (
	StepReadinessStatuses = "tasker_step_readiness_statuses"
	StepDagRelationships  = "tasker_step_dag_relationships"
	TaskExecutionContexts = "tasker_task_execution_contexts"
	TaskWorkflowSummaries = "tasker_task_workflow_summaries"
	TaskStatusSummaries   = "tasker_task_status_summaries"
	StepPerformance       = "tasker_step_performance"
	HourlyThroughput      = "tasker_hourly_throughput"
)

// Projection is one read model of the database: a view whose rows the read side reads
// through one read-only model of internal/models. A read of a live view filters on its key or
// on task_id, so that it costs what the task costs.
type Projection struct {
	// Name is the view's name, the model's TableName, and for a materialized projection its
	// key in tasker_read_model_state.
	Name string
	Kind Kind
	// Model names the read model type of internal/models whose row is one row of the view.
	Model string
	// Key are the columns that identify a row, the model's primary key: workflow_step_id for
	// a live view with one row per step, task_id for one with one row per task.
	Key []string
	// Versions are the released definitions, oldest first; the last one is current. Each is
	// installed by one Go migration of internal/migrate.
	Versions []Version
	// Reads lists the projections this one's definition selects from. The way down of a new
	// version of one of them drops this one and reinstalls the version it had before.
	Reads []string
	// Refresh says how a materialized projection is kept fresh; nil for a live one.
	Refresh *Refresh
}

// Version is one released definition of a projection.
type Version struct {
	// Migration is the goose version of the Go migration that installs it. Go and SQL
	// migrations share one numbering; goose refuses a duplicate.
	Migration int64
	// File is the definition's path inside Views (views/...) or Materialized
	// (materialized/...). A released file is never edited.
	File string
}

// Refresh holds the facts of a materialized projection that the refresher needs.
type Refresh struct {
	// EnvKey names the projection in environment variables:
	// TASKER_REFRESH_SCHEDULE_<EnvKey>.
	EnvKey string
	// Tables are the aggregate tables the refresher updates and the view reads.
	Tables []string
	// Definition is the migration that defines the view over Tables, a path as ReadFile
	// takes it.
	Definition string
}

// Projections is the catalogue of every projection: the live views in the order their first
// versions are installed, then the materialized ones likewise. internal/migrate installs
// them from it, internal/refresh keeps the materialized ones, and internal/models holds one
// read model for each.
var Projections = []Projection{
	{
		Name:  StepReadinessStatuses,
		Kind:  LiveView,
		Model: "StepReadinessStatus",
		Key:   []string{"workflow_step_id"},
		Versions: []Version{
			{Migration: 10, File: "views/tasker_step_readiness_statuses_v01.sql"},
			// Version 2 appends processed and in_process.
			{Migration: 33, File: "views/tasker_step_readiness_statuses_v02.sql"},
		},
	},
	{
		Name:     StepDagRelationships,
		Kind:     LiveView,
		Model:    "StepDagRelationship",
		Key:      []string{"workflow_step_id"},
		Versions: []Version{{Migration: 11, File: "views/tasker_step_dag_relationships_v01.sql"}},
	},
	{
		Name:     TaskExecutionContexts,
		Kind:     LiveView,
		Model:    "TaskExecutionContext",
		Key:      []string{"task_id"},
		Versions: []Version{{Migration: 12, File: "views/tasker_task_execution_contexts_v01.sql"}},
		Reads:    []string{StepReadinessStatuses},
	},
	{
		Name:     TaskWorkflowSummaries,
		Kind:     LiveView,
		Model:    "TaskWorkflowSummary",
		Key:      []string{"task_id"},
		Versions: []Version{{Migration: 13, File: "views/tasker_task_workflow_summaries_v01.sql"}},
		Reads:    []string{TaskExecutionContexts, StepReadinessStatuses},
	},
	{
		Name:     TaskStatusSummaries,
		Kind:     MaterializedView,
		Model:    "TaskStatusSummary",
		Key:      []string{"named_task_id"},
		Versions: []Version{{Migration: 20, File: "materialized/tasker_task_status_summaries_v01.sql"}},
		Refresh: &Refresh{
			EnvKey:     "TASK_STATUS_SUMMARIES",
			Tables:     []string{"tasker_rm_task_states", "tasker_rm_task_counts"},
			Definition: incrementalReadModels,
		},
	},
	{
		Name:     StepPerformance,
		Kind:     MaterializedView,
		Model:    "StepPerformance",
		Key:      []string{"task_namespace_id", "named_step_id"},
		Versions: []Version{{Migration: 21, File: "materialized/tasker_step_performance_v01.sql"}},
		Refresh: &Refresh{
			EnvKey:     "STEP_PERFORMANCE",
			Tables:     []string{"tasker_rm_step_performance", "tasker_rm_step_durations"},
			Definition: incrementalReadModels,
		},
	},
	{
		Name:     HourlyThroughput,
		Kind:     MaterializedView,
		Model:    "HourlyThroughput",
		Key:      []string{"hour"},
		Versions: []Version{{Migration: 22, File: "materialized/tasker_hourly_throughput_v01.sql"}},
		Refresh: &Refresh{
			EnvKey:     "HOURLY_THROUGHPUT",
			Tables:     []string{"tasker_rm_hourly_throughput"},
			Definition: incrementalReadModels,
		},
	},
}

const incrementalReadModels = "migrations/00031_incremental_read_models.sql"

// Find returns the projection named name.
func Find(name string) (Projection, bool) {
	for _, p := range Projections {
		if p.Name == name {
			return p, true
		}
	}
	return Projection{}, false
}

// Names lists the names of the projections of kind k, in catalogue order.
func Names(k Kind) []string {
	var out []string
	for _, p := range Projections {
		if p.Kind == k {
			out = append(out, p.Name)
		}
	}
	return out
}

// ReadFile returns the embedded SQL file at path: a definition (views/..., materialized/...)
// or a migration (migrations/...).
func ReadFile(path string) ([]byte, error) {
	dir, _, _ := strings.Cut(path, "/")
	var src fs.FS
	switch dir {
	case "views":
		src = Views
	case "materialized":
		src = Materialized
	case "migrations":
		src = Migrations
	default:
		return nil, fmt.Errorf("reading %s: not an embedded folder of db", path)
	}
	return fs.ReadFile(src, path)
}
