package bench

import (
	"bufio"
	"os"
	"strings"
)

// CPUModel is the machine's CPU model from /proc/cpuinfo ("unknown" when unreadable).
func CPUModel() string { return procField("/proc/cpuinfo", "model name") }

// MemTotal is the machine's memory from /proc/meminfo ("unknown" when unreadable).
func MemTotal() string { return procField("/proc/meminfo", "MemTotal") }

// LoadAverage is the machine's 1, 5 and 15 minute load averages from /proc/loadavg
// ("unknown" when unreadable). The figures of a run on a shared machine are read with it.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// procField returns the value of the first "key: value" line of path.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
