// Package store holds every write statement of the product, and the reads the write side
// needs inside its transactions, as context-first methods on one handle. The whole catalogue
// of statements that change data can be read here, file by area (engine.go, transitions.go,
// tasks.go, tokens.go, …); the services above it (internal/orchestration, internal/auth,
// internal/refresh, internal/retention, internal/seed, internal/template) hold the rules and
// never see SQL.
//
// A Store is safe for concurrent use. Tx gives a Store whose every statement runs in one
// transaction. Lists are passed as one array parameter with database.Array.
package store

import (
	"context"
	"database/sql"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// Store runs the write side's statements on one database handle (the product's one handle
// type, a *gorm.DB over a pgx pool opened by internal/database), or on one transaction of it.
type Store struct {
	db     *gorm.DB
	engine *database.EnginePool // where EngineTx runs, when set (see WithEngine)
	notes  *transitionNotes     // in an engine transaction: the transitions it notifies (see notify.go)
}

// New returns a Store over db.
func New(db *gorm.DB) *Store { return &Store{db: db} }

// WithEngine returns a Store over the same handle whose EngineTx transactions run on the
// engine's own pool p (database.OpenEngine); every other statement stays on the handle.
func (s *Store) WithEngine(p *database.EnginePool) *Store { return &Store{db: s.db, engine: p} }

// Tx runs fn in one transaction: every statement of the Store given to fn runs in it. The
// transaction commits when fn returns nil and rolls back otherwise (fn's error is returned
// as is). Within a transaction, Tx runs fn in a savepoint; in an engine transaction, the
// transitions written in it are notified with the transaction's (a savepoint rolled back
// leaves a notification of rows that are not there: a wake-up for nothing, which every
// listener tolerates, since it re-reads what it is told about).
func (s *Store) Tx(ctx context.Context, fn func(tx *Store) error, opts ...*sql.TxOptions) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return fn(&Store{db: tx, notes: s.notes})
	}, opts...)
}

// conn is the handle for one statement under ctx.
func (s *Store) conn(ctx context.Context) *gorm.DB { return s.db.WithContext(ctx) }
