package pgembed

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// childAttr makes postgres (and initdb) run as u, in its own process group so that a terminal's
// Ctrl-C reaches the server only, with SIGINT (fast shutdown) sent by the kernel when the thread
// that started it dies. The caller keeps that thread alive, locked, for the child's whole life.
func childAttr(u *runAs) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGINT,
		Credential: u.credential(),
	}
}

// postgresIn reports whether pid is a live postgres process whose working directory is dataDir
// (postgres works inside its data directory). A process this process may not inspect is not
// one: the cluster's processes run as the data directory's owner, whom the server can inspect.
func postgresIn(pid int, dataDir string) bool {
	proc := "/proc/" + strconv.Itoa(pid)
	cwd, err := os.Readlink(proc + "/cwd")
	if err != nil || cwd != dataDir {
		return false
	}
	exe, err := os.Readlink(proc + "/exe")
	if err != nil {
		return false
	}
	base := strings.TrimSuffix(filepath.Base(exe), " (deleted)")
	return base == "postgres" || base == "postmaster"
}

// processesIn lists the live postgres processes working in dataDir: an old postmaster and the
// backends that outlive it for a moment.
func processesIn(dataDir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if postgresIn(pid, dataDir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
