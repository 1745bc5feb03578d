// Package resolvers holds the GraphQL resolvers. Each resolver translates its arguments and
// delegates in one call: to a dataloader (graph/loaders), a batch reader (internal/models),
// the transition feed (graph/feed) or the orchestration engine. None of them holds SQL.
package resolvers

import (
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/feed"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/refresh"
)

// Resolver holds the dependencies of every resolver.
type Resolver struct {
	DB   *gorm.DB
	Feed *feed.Feed
	// Service runs every mutation of tasks and steps (creation and the operator actions).
	Service *orchestration.Service
	// Refresher runs refreshReadModel; nil makes it answer SERVICE_UNAVAILABLE.
	Refresher *refresh.Refresher
}
