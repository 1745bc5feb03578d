package model

// Dashboard is the root of the dashboard reads. It holds nothing: each of its fields has a
// resolver that reads one materialized read model.
type Dashboard struct{}
