package refresh

import (
	"slices"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/events"
)

// View is one dashboard read model the refresher maintains.
type View struct {
	// Name is the dashboard view's name (and its tasker_read_model_state key).
	Name string
	// EnvKey names the view in environment variables: TASKER_REFRESH_SCHEDULE_<EnvKey>.
	EnvKey string
	// Affected reports whether a write event can change the view's rows.
	Affected events.Filter
	// NewestWrite is an SQL expression (index-driven, constant time): when the newest row of
	// the tables whose writes change the view was written. NULL when they are empty.
	NewestWrite string
}

// Index-driven probes of the newest write to the tables the views read. A transition table's
// newest row is its highest id (ids are assigned at insert).
const (
	newestNamedTask      = `(SELECT max(created_at) FROM tasker_named_tasks)`
	newestTask           = `(SELECT max(created_at) FROM tasker_tasks)`
	newestTaskTransition = `(SELECT created_at FROM tasker_task_transitions ORDER BY id DESC LIMIT 1)`
	newestStepTransition = `(SELECT created_at FROM tasker_workflow_step_transitions ORDER BY id DESC LIMIT 1)`
)

// The materialized read models, by name.
const (
	TaskStatusSummaries = db.TaskStatusSummaries
	StepPerformance     = db.StepPerformance
	HourlyThroughput    = db.HourlyThroughput
)

// envKey is the catalogue's name for the read model in environment variables.
func envKey(name string) string {
	p, _ := db.Find(name)
	return p.Refresh.EnvKey
}

// Views lists every materialized read model of the catalogue db.Projections.
var Views = []View{
	{
		Name:   TaskStatusSummaries,
		EnvKey: envKey(TaskStatusSummaries),
		Affected: func(ev events.Event) bool {
			return ev.Channel == events.ChannelTaskTransitions || ev.Channel == events.ChannelTasksCreated
		},
		// Every named task has a row, with or without tasks.
		NewestWrite: "greatest(" + newestNamedTask + ", " + newestTask + ", " + newestTaskTransition + ")",
	},
	{
		Name:   StepPerformance,
		EnvKey: envKey(StepPerformance),
		Affected: func(ev events.Event) bool {
			return ev.Channel == events.ChannelStepTransitions
		},
		// Steps are created with their task.
		NewestWrite: "greatest(" + newestTask + ", " + newestStepTransition + ")",
	},
	{
		Name:   HourlyThroughput,
		EnvKey: envKey(HourlyThroughput),
		Affected: func(ev events.Event) bool {
			switch ev.Channel {
			case events.ChannelTasksCreated:
				return true
			case events.ChannelTaskTransitions, events.ChannelStepTransitions:
				return ev.To == "complete" || ev.To == "error"
			}
			return false
		},
		NewestWrite: "greatest(" + newestTask + ", " + newestTaskTransition + ", " + newestStepTransition + ")",
	},
}

// ViewNames lists the names of Views, in order.
func ViewNames() []string {
	names := make([]string, len(Views))
	for i, v := range Views {
		names[i] = v.Name
	}
	return names
}

func findView(name string) (View, bool) {
	i := slices.IndexFunc(Views, func(v View) bool { return v.Name == name })
	if i < 0 {
		return View{}, false
	}
	return Views[i], true
}
