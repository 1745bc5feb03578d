// Package db embeds the SQL that defines the database: the ordered migrations, the versioned
// live view definitions and the versioned materialized view definitions, and lists the
// projections those definitions make (Projections, the catalogue that drives the migrations
// of internal/migrate, the refresher and the read models). The binary, the CLI and the tests
// all migrate from these same embedded files.
package db

import "embed"

// Migrations holds db/migrations/*.sql, the ordered schema history applied by internal/migrate.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Views holds db/views/*.sql: one file per released version of each live view. A released
// file is never edited; a change adds the next version to Projections, which installs it.
//
//go:embed views
var Views embed.FS

// Materialized holds db/materialized/*.sql: one file per released version of each
// materialized read model, installed as listed in Projections.
//
//go:embed materialized
var Materialized embed.FS
