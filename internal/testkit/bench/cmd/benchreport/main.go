// Command benchreport writes BENCHMARKS.md from `go test -bench` output, using the mapping
// table of internal/testkit/bench. It adds what the output lacks: the machine (CPU, cores, memory),
// the PostgreSQL server's version, the date, the command and its duration, the findings
// file, and the last Peers section written by `make bench-peers` (between its markers).
//
//	go test -run '^$' -bench . ./... | tee bench.txt
//	go run ./internal/testkit/bench/cmd/benchreport -in bench.txt -out BENCHMARKS.md -command "make bench"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/testkit/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run() error {
	in := flag.String("in", "", "go test -bench output to read (required)")
	out := flag.String("out", "BENCHMARKS.md", "file to write")
	command := flag.String("command", "make bench", "the command that produced the output")
	seconds := flag.Int("seconds", 0, "how long the command took, in seconds")
	findings := flag.String("findings", "internal/testkit/bench/findings.md", "markdown appended verbatim (slow spots and fixes)")
	peers := flag.String("peers", "internal/testkit/bench/peers.md", "the last Peers section (make bench-peers), kept between its markers; ignored when missing")
	flag.Parse()
	if *in == "" {
		return fmt.Errorf("-in is required: the go test -bench output")
	}
	f, err := os.Open(*in)
	if err != nil {
		return fmt.Errorf("opening benchmark output: %w", err)
	}
	defer f.Close()
	res, err := bench.Parse(f)
	if err != nil {
		return err
	}
	if len(res.Results) == 0 {
		return fmt.Errorf("%s holds no benchmark results", *in)
	}
	var notes []byte
	if *findings != "" {
		if notes, err = os.ReadFile(*findings); err != nil {
			return fmt.Errorf("reading findings: %w", err)
		}
	}
	if raw, err := os.ReadFile(*peers); err == nil {
		notes = append(append(notes, '\n'), bench.PeersBlock(string(raw))...)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading the Peers section: %w", err)
	}
	m := bench.Machine{
		CPU: bench.CPUModel(), Cores: runtime.NumCPU(), Memory: bench.MemTotal(), Postgres: postgresVersion(),
		Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Command: *command,
		Duration: (time.Duration(*seconds) * time.Second).String(), GoVersion: runtime.Version(),
		Notes: []string{fmt.Sprintf("load average when the report was written: %s (the machine is shared; "+
			"figures are noisy, compare rows of one run rather than runs)", bench.LoadAverage())},
	}
	// Sections other tools wrote into the previous report (between <!-- name:start --> and
	// <!-- name:end -->) are kept, after the generated ones.
	previous, err := os.ReadFile(*out)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", *out, err)
	}
	if kept := bench.KeptSections(string(previous)); kept != "" {
		notes = append(append(notes, "\n\n"...), kept...)
	}
	w, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("creating %s: %w", *out, err)
	}
	if err := bench.Write(w, m, res, bench.Sections, string(notes)); err != nil {
		w.Close()
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	return w.Close()
}

func postgresVersion() string {
	url := os.Getenv("TASKER_TEST_DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return v
}
