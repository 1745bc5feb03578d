package models

// ReadinessPageSQL exposes the statement of ReadinessPage to the plan tests.
var ReadinessPageSQL = readinessPageSQL
