package pgembed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrNoBinaries means that no PostgreSQL server binaries (initdb and postgres) were found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries (initdb, postgres) found on PATH, " +
	"through pg_config --bindir or under /usr/lib/postgresql/*/bin: install PostgreSQL " +
	"(Debian/Ubuntu: `apt-get install postgresql`, which `make run` does for you; " +
	"macOS: `brew install postgresql`), or set DATABASE_URL to use an existing server")

// Binaries is one installation of the PostgreSQL server programs.
type Binaries struct {
	// Dir holds initdb and postgres.
	Dir string
	// Version is the full version, e.g. "16.4".
	Version string
	// Major is the major version, e.g. 16 (9 for 9.6).
	Major int
}

// binSearch says where to look for PostgreSQL installations.
type binSearch struct {
	// path is a PATH-style list of directories searched for postgres and pg_config.
	path string
	// libGlob matches versioned installation directories.
	libGlob string
}

func defaultSearch() binSearch {
	return binSearch{path: os.Getenv("PATH"), libGlob: "/usr/lib/postgresql/*/bin"}
}

// FindBinaries lists the PostgreSQL installations on this machine, newest first. It fails with
// ErrNoBinaries when there is none.
func FindBinaries(ctx context.Context) ([]Binaries, error) {
	return findBinaries(ctx, defaultSearch())
}

func findBinaries(ctx context.Context, s binSearch) ([]Binaries, error) {
	var dirs []string
	if p := lookIn(s.path, "postgres"); p != "" {
		dirs = append(dirs, filepath.Dir(p))
	}
	if p := lookIn(s.path, "pg_config"); p != "" {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := exec.CommandContext(cctx, p, "--bindir").Output()
		cancel()
		if err == nil {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
	}
	if s.libGlob != "" {
		matches, _ := filepath.Glob(s.libGlob) // the pattern is constant and valid
		dirs = append(dirs, matches...)
	}
	seen := map[string]bool{}
	var found []Binaries
	for _, d := range dirs {
		b, err := inspectBinDir(ctx, d)
		if err != nil || seen[b.Dir] {
			continue
		}
		seen[b.Dir] = true
		found = append(found, b)
	}
	if len(found) == 0 {
		return nil, ErrNoBinaries
	}
	sort.SliceStable(found, func(i, j int) bool { return versionLess(found[j].Version, found[i].Version) })
	return found, nil
}

// inspectBinDir checks that dir holds executable initdb and postgres and asks postgres for its
// version. Dir in the result has its symbolic links resolved, so that one installation reached
// through several paths is listed once.
func inspectBinDir(ctx context.Context, dir string) (Binaries, error) {
	postgres, err := filepath.EvalSymlinks(filepath.Join(dir, "postgres"))
	if err != nil {
		return Binaries{}, fmt.Errorf("finding postgres in %s: %w", dir, err)
	}
	real := filepath.Dir(postgres)
	for _, name := range []string{"postgres", "initdb"} {
		if !isExecutable(filepath.Join(real, name)) {
			return Binaries{}, fmt.Errorf("%s has no executable %s", real, name)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, filepath.Join(real, "postgres"), "-V").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("running %s/postgres -V: %w", real, err)
	}
	version, major, err := parseVersion(string(out))
	if err != nil {
		return Binaries{}, fmt.Errorf("reading the version of %s/postgres: %w", real, err)
	}
	return Binaries{Dir: real, Version: version, Major: major}, nil
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// parseVersion reads the output of `postgres -V`, e.g. "postgres (PostgreSQL) 16.4 (Debian)".
func parseVersion(out string) (version string, major int, err error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return "", 0, fmt.Errorf("unexpected version output %q", strings.TrimSpace(out))
	}
	major, _ = strconv.Atoi(m[1]) // the pattern guarantees digits
	version = m[1]
	if m[2] != "" {
		version += "." + m[2]
	}
	return version, major, nil
}

// versionLess orders dotted versions numerically ("9.6" < "15.2" < "16.1").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// pickBinaries chooses the installation for a cluster: the newest one for a fresh cluster
// (clusterMajor == ""), else the newest one whose major version matches the cluster's
// PG_VERSION.
func pickBinaries(found []Binaries, clusterMajor string) (Binaries, error) {
	if clusterMajor == "" {
		return found[0], nil
	}
	want, err := strconv.Atoi(strings.SplitN(clusterMajor, ".", 2)[0])
	if err != nil {
		return Binaries{}, fmt.Errorf("reading PG_VERSION %q: not a version", clusterMajor)
	}
	var have []string
	for _, b := range found {
		if b.Major == want {
			return b, nil
		}
		have = append(have, b.Version+" in "+b.Dir)
	}
	return Binaries{}, fmt.Errorf("the data directory was created by PostgreSQL %s but only %s is installed: "+
		"install PostgreSQL %s, or move the data directory away to start a fresh cluster",
		clusterMajor, strings.Join(have, ", "), clusterMajor)
}

// lookIn finds an executable named name in a PATH-style list of directories.
func lookIn(path, name string) string {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}
