package refresh

import (
	"slices"

	"github.com/taskerhq/tasker/internal/events"
)

// View is one materialized read model the refresher maintains.
type View struct {
	// Name is the materialized view's name (and its tasker_read_model_state key).
	Name string
	// EnvKey names the view in environment variables: TASKER_REFRESH_SCHEDULE_<EnvKey>.
	EnvKey string
	// Affected reports whether a write event can change the view's rows.
	Affected events.Filter
}

// The materialized read models, by name.
const (
	TaskStatusSummaries = "tasker_task_status_summaries"
	StepPerformance     = "tasker_step_performance"
	HourlyThroughput    = "tasker_hourly_throughput"
)

// Views lists every materialized read model of db/materialized.
var Views = []View{
	{
		Name:   TaskStatusSummaries,
		EnvKey: "TASK_STATUS_SUMMARIES",
		Affected: func(ev events.Event) bool {
			return ev.Channel == events.ChannelTaskTransitions || ev.Channel == events.ChannelTasksCreated
		},
	},
	{
		Name:   StepPerformance,
		EnvKey: "STEP_PERFORMANCE",
		Affected: func(ev events.Event) bool {
			return ev.Channel == events.ChannelStepTransitions
		},
	},
	{
		Name:   HourlyThroughput,
		EnvKey: "HOURLY_THROUGHPUT",
		Affected: func(ev events.Event) bool {
			switch ev.Channel {
			case events.ChannelTasksCreated:
				return true
			case events.ChannelTaskTransitions, events.ChannelStepTransitions:
				return ev.To == "complete" || ev.To == "error"
			}
			return false
		},
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
