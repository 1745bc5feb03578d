//go:build !linux

package pgembed

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// childAttr makes postgres (and initdb) run as u, in its own process group so that a terminal's
// Ctrl-C reaches the server only. Without Linux's parent-death signal, a cluster whose server
// was killed with SIGKILL keeps running until the next Start stops it.
func childAttr(u *runAs) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: u.credential()}
}

// postgresIn reports whether pid is a live postgres process, judged by its command line naming
// dataDir.
func postgresIn(pid int, dataDir string) bool {
	out, err := exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return false
	}
	cmd := string(out)
	return strings.Contains(cmd, "postgres") && strings.Contains(cmd, dataDir)
}

// processesIn cannot list a dead postmaster's backends without /proc; they exit on their own.
func processesIn(string) []int { return nil }
