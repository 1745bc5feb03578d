package models

import (
	"context"

	"gorm.io/gorm"
)

// ReadinessPageSQL exposes the statement of ReadinessPage to the plan tests.
var ReadinessPageSQL = readinessPageSQL

// ParseIDArray exposes parseIDArray to the tests.
var ParseIDArray = parseIDArray

// ScanTasks reads task rows with query, whose only parameter is ids, as TasksByIDs does.
func ScanTasks(ctx context.Context, db *gorm.DB, query string, ids []int64) ([]TaskRecord, error) {
	return scanByIDs(ctx, db, "reading tasks", taskColumns, readTask, ids, query)
}
