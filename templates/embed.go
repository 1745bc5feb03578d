// Package templates ships the example task templates with the binary: the five standard
// workflow shapes (linear, diamond, parallel merge, tree, mixed) with their injected failures,
// an http example, and payment_failures, which ends blocked by failures. A step that "times out once" uses the fail handler with kind timeout
// and a 200ms step timeout: its first attempt waits for the timeout, later attempts succeed.
package templates

import "embed"

// FS holds every *.yaml file of this directory, at its root.
//
//go:embed *.yaml
var FS embed.FS
