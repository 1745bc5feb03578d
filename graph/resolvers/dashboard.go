package resolvers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/refresh"
)

// Defaults of the Dashboard fields' size arguments; the schema states the same values.
const (
	defaultStepPerformanceLimit = 50
	defaultThroughputHours      = 24
)

// taskStatusSummaries reads the task status summaries of one namespace ("" or nil: all), in
// two statements.
func (r *Resolver) taskStatusSummaries(ctx context.Context, namespace *string) (*models.TaskStatusSummaries, error) {
	out, err := models.ReadTaskStatusSummaries(ctx, r.DB, deref(namespace))
	if err != nil {
		return nil, dashboardErr("taskStatusSummaries", err)
	}
	return &out, nil
}

// stepPerformance reads at most limit (nil: the default) step performance rows, in two
// statements. A limit out of range is a VALIDATION error and reads nothing.
func (r *Resolver) stepPerformance(ctx context.Context, namespace *string, limit *int) (*models.StepPerformances, error) {
	n := defaultStepPerformanceLimit
	if limit != nil {
		n = *limit
	}
	out, err := models.ReadStepPerformance(ctx, r.DB, deref(namespace), n)
	if err != nil {
		return nil, dashboardErr("stepPerformance", err)
	}
	return &out, nil
}

// throughput reads the last hours (nil: the default) UTC hours, in two statements. hours out
// of range is a VALIDATION error and reads nothing.
func (r *Resolver) throughput(ctx context.Context, hours *int) (*models.HourlyThroughputs, error) {
	n := defaultThroughputHours
	if hours != nil {
		n = *hours
	}
	out, err := models.ReadHourlyThroughput(ctx, r.DB, n)
	if err != nil {
		return nil, dashboardErr("throughput", err)
	}
	return &out, nil
}

// dashboardErr names the field in a bad argument's VALIDATION error; other errors stay
// internal.
func dashboardErr(field string, err error) error {
	if errs.Is(err, errs.Invalid) {
		return errs.E(errs.Invalid, "dashboard.%s: %w", field, err)
	}
	return fmt.Errorf("reading dashboard.%s: %w", field, err)
}

// readTime is the instant ages are computed at: the start of the operation, so every age of
// one response is measured from the same instant.
func readTime(ctx context.Context) time.Time {
	if graphql.HasOperationContext(ctx) {
		if t := graphql.GetOperationContext(ctx).Stats.OperationStart; !t.IsZero() {
			return t
		}
	}
	return time.Now()
}

// ageSeconds converts an age to seconds; nil stays nil.
func ageSeconds(d *time.Duration) *float64 {
	if d == nil {
		return nil
	}
	s := d.Seconds()
	return &s
}

// refreshReadModel refreshes the named read model now, through the server's refresher, and
// returns its status afterwards. An unknown name is NOT_FOUND listing the known ones and runs
// nothing; without a refresher the answer is SERVICE_UNAVAILABLE. A refresh skipped because
// another process is refreshing the same view right now is not an error: the status returned
// is the current one. A failed refresh is an (internal) error; readModels shows its lastError.
func (r *Resolver) refreshReadModel(ctx context.Context, name string) (*models.ReadModelStatus, error) {
	if !slices.Contains(refresh.ViewNames(), name) {
		return nil, errs.E(errs.NotFound, "read model %q does not exist; the read models are %s",
			name, strings.Join(refresh.ViewNames(), ", "))
	}
	if r.Refresher == nil {
		return nil, errs.E(errs.Unavailable, "refreshReadModel: this server runs no read-model refresher")
	}
	if _, err := r.Refresher.Refresh(ctx, name); err != nil {
		return nil, fmt.Errorf("refreshing read model %s: %w", name, err)
	}
	return readModel(ctx, r.DB, name)
}

// readModel reads the status of one read model (one statement).
func readModel(ctx context.Context, db *gorm.DB, name string) (*models.ReadModelStatus, error) {
	all, err := models.ReadModelStatuses(ctx, db)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(all, func(s models.ReadModelStatus) bool { return s.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("reading read model %s: it has no freshness record", name)
	}
	return &all[i], nil
}
