// Package models holds the GORM models of the workflow database and the readers of the read
// side: table models (templates, tasks, steps, transitions) and one read-only model for each
// projection of the catalogue db.Projections (the live views and the dashboards). Table names
// and columns follow the domain contract (docs/SEMANTICS.md); view-backed models refuse to be
// written and are never auto-migrated (migrations own the schema).
package models
