package orchestration

import (
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/template"
)

// Service is the write side of tasks and steps: every command that changes them goes through
// it. Creation (CreateTask, CreateTasks), the operator actions (CancelTask, CancelStep,
// RetryStep, ResolveStep), settling a task (FinalizeTask) and the recovery of expired claims
// (RecoverExpired) are its methods; the Engine, built over a Service, claims steps, records
// their attempts and recovers them through it. Its statements are internal/store's; its
// errors are internal/errs's. A Service is safe for concurrent use.
type Service struct {
	db        *gorm.DB // registers templates (internal/template)
	store     *store.Store
	templates *template.Registry
}

// NewService returns the service over db; templates resolves the templates tasks are created
// from (it may be nil for a service that creates no task, such as a worker's).
func NewService(db *gorm.DB, templates *template.Registry) *Service {
	return &Service{db: db, store: store.New(db), templates: templates}
}
