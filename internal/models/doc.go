// Package models holds the GORM models of the workflow database: table models for the write
// side (templates, tasks, steps, edges, transitions, annotations) and read-only models for the
// live views. Table names and columns follow the domain contract; view-backed models refuse to
// be written and are never auto-migrated (migrations own the schema).
package models
