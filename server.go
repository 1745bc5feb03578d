// Command tasker is a workflow orchestration server: tasks made of steps joined in a DAG, run by
// workers on PostgreSQL, read through live and materialized SQL projections.
//
// Usage:
//
//	tasker serve     migrate, then serve HTTP (health, API) and run workers
//	tasker run-task  create a task from a template, on the database of the running server
//	tasker status    where the running server and its database are, and whether they answer
//
// Run "tasker help" for every subcommand and "tasker <command> -h" for its flags. Commands that
// use the database find it the same way: -database-url, else DATABASE_URL, else the private
// cluster of the server running with the data folder (internal/app/cmd_flags.go). Exit codes:
// 0 done, 1 failed, 2 no command or an unknown one.
package main

import (
	"os"

	"github.com/taskerhq/tasker/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:]))
}
