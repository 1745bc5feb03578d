package migrate

// NewProvider exposes the goose provider to the external tests, which migrate down and up.
var NewProvider = newProvider
