package models

// ReadinessPageSQL exposes the statement of ReadinessPage to the plan tests.
var ReadinessPageSQL = readinessPageSQL

// ParseIDArray exposes parseIDArray to the tests.
var ParseIDArray = parseIDArray
