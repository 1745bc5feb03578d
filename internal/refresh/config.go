package refresh

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/taskerhq/tasker/internal/errs"
)

// Defaults of Config.
const (
	DefaultSchedule    = "@every 1m"
	DefaultDebounce    = 5 * time.Second
	DefaultMinInterval = 15 * time.Second
	DefaultTimeout     = 5 * time.Minute
	DefaultRetention   = 7 * 24 * time.Hour
)

// Config tunes a Refresher. The zero value means every default.
type Config struct {
	// Schedules maps a view name to its cron spec (five fields, or a descriptor such as
	// "@every 30s" or "@hourly"); views not listed use DefaultSchedule. "off" disables the
	// schedule of that view (event-triggered and on-demand refreshes still run).
	Schedules map[string]string
	// Debounce is how long after the first write seen since a refresh the view is refreshed.
	Debounce time.Duration
	// MinInterval is the shortest time between the starts of two event-triggered refreshes of
	// one view by this process.
	MinInterval time.Duration
	// Timeout is the statement timeout of one refresh.
	Timeout time.Duration
	// Retention is how long the refresh log keeps its rows.
	Retention time.Duration
	// ProcessID identifies this process in the refresh log (default hostname:pid).
	ProcessID string
}

// ConfigFromEnv reads a Config from the environment through getenv (os.Getenv in production):
//
//	TASKER_REFRESH_SCHEDULE               cron spec of every view (default "@every 1m")
//	TASKER_REFRESH_SCHEDULE_<VIEW>        cron spec of one view, e.g. _STEP_PERFORMANCE
//	TASKER_REFRESH_DEBOUNCE               e.g. 5s
//	TASKER_REFRESH_MIN_INTERVAL           e.g. 15s
//	TASKER_REFRESH_TIMEOUT                e.g. 5m
//	TASKER_REFRESH_RETENTION              e.g. 168h
//
// A value that does not parse is an error naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{Schedules: map[string]string{}}
	all := strings.TrimSpace(getenv("TASKER_REFRESH_SCHEDULE"))
	for _, v := range Views {
		key := "TASKER_REFRESH_SCHEDULE_" + v.EnvKey
		spec := strings.TrimSpace(getenv(key))
		if spec == "" {
			spec = all
			key = "TASKER_REFRESH_SCHEDULE"
		}
		if spec == "" {
			continue
		}
		if err := validateSchedule(spec); err != nil {
			return Config{}, errs.E(errs.Invalid, "%s=%q: %w", key, spec, err)
		}
		cfg.Schedules[v.Name] = spec
	}
	durations := []struct {
		key string
		dst *time.Duration
	}{
		{"TASKER_REFRESH_DEBOUNCE", &cfg.Debounce},
		{"TASKER_REFRESH_MIN_INTERVAL", &cfg.MinInterval},
		{"TASKER_REFRESH_TIMEOUT", &cfg.Timeout},
		{"TASKER_REFRESH_RETENTION", &cfg.Retention},
	}
	for _, d := range durations {
		s := strings.TrimSpace(getenv(d.key))
		if s == "" {
			continue
		}
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			return Config{}, errs.E(errs.Invalid, "%s=%q is not a positive duration (e.g. 5s)", d.key, s)
		}
		*d.dst = v
	}
	return cfg, nil
}

// withDefaults checks cfg and fills in the defaults.
func (cfg Config) withDefaults() (Config, error) {
	out := cfg
	out.Schedules = make(map[string]string, len(Views))
	for name, spec := range cfg.Schedules {
		if _, ok := findView(name); !ok {
			return Config{}, errs.E(errs.Invalid, "schedule for unknown view %q (known: %s)", name, strings.Join(ViewNames(), ", "))
		}
		if err := validateSchedule(spec); err != nil {
			return Config{}, errs.E(errs.Invalid, "schedule of %s %q: %w", name, spec, err)
		}
		out.Schedules[name] = spec
	}
	for _, v := range Views {
		if out.Schedules[v.Name] == "" {
			out.Schedules[v.Name] = DefaultSchedule
		}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"debounce", &out.Debounce, DefaultDebounce},
		{"minimum interval", &out.MinInterval, DefaultMinInterval},
		{"timeout", &out.Timeout, DefaultTimeout},
		{"retention", &out.Retention, DefaultRetention},
	} {
		switch {
		case *d.v < 0:
			return Config{}, errs.E(errs.Invalid, "%s %s is negative", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if out.ProcessID == "" {
		host, _ := os.Hostname()
		out.ProcessID = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	return out, nil
}

func validateSchedule(spec string) error {
	if spec == "off" {
		return nil
	}
	if _, err := cron.ParseStandard(spec); err != nil {
		return errs.E(errs.Invalid, "parsing cron schedule: %w", err)
	}
	return nil
}
