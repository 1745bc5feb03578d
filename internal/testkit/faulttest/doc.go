// Package faulttest holds the fault tests of the whole service: a private PostgreSQL cluster is
// restarted under load while engines run steps and clients stream transitions, and the tests
// check that nothing is lost, duplicated or reordered. The package has no code of its own.
package faulttest
