package app

import (
	"context"
	"log/slog"
	"math"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/metrics"
)

// decideAuth applies the startup rule of auth.DecideMode to this configuration: the embedded
// default on a loopback address runs open (and says so); anything else requires API tokens
// unless TASKER_AUTH=off. An unknown TASKER_AUTH refuses to start.
func decideAuth(cfg config.Config, log *slog.Logger) (auth.Decision, error) {
	d, err := auth.DecideMode(auth.Setup{Embedded: cfg.Embedded(), Listen: cfg.Listen, Env: cfg.Auth})
	if err != nil {
		return d, usageError("%w", err)
	}
	if d.Warning != "" {
		log.Warn("serve: " + d.Warning)
	}
	return d, nil
}

// apiSecurity is the guard and the metrics of the HTTP API.
type apiSecurity struct {
	guard   *auth.Guard
	metrics *metrics.Metrics
}

// apiLimits are the request limits of the configuration (auth.LimitsFromEnv). In open mode
// (authentication off: a private development server, or TASKER_AUTH=off) there is no rate
// limit unless TASKER_RATE_LIMIT is set: every request is the same anonymous admin, so a
// per-token rate protects nothing and only refuses a local benchmark. The other limits always
// apply.
func apiLimits(mode auth.Mode, cfg config.Config) auth.Limits {
	limits := cfg.Limits.WithDefaults()
	if mode == auth.Off && !cfg.RateLimitSet {
		limits.RatePerSecond = math.Inf(1) // rate.Inf: every operation is admitted at once
		limits.Burst = 1                   // ignored at an infinite rate
	}
	return limits
}

// newAPISecurity builds the request guard (limits from apiLimits) and the metrics registry.
// With authentication required and no active token, it warns how to create one: every API
// request is refused until then.
func newAPISecurity(ctx context.Context, d auth.Decision, limits auth.Limits, db *gorm.DB, hub *events.Hub, log *slog.Logger) (apiSecurity, error) {
	store := auth.NewStore(db)
	if d.Mode == auth.Required {
		tokens, err := store.List(ctx)
		if err != nil {
			return apiSecurity{}, err
		}
		active := 0
		for _, t := range tokens {
			if t.RevokedAt == nil {
				active++
			}
		}
		if active == 0 {
			log.Warn("serve: authentication is required and no API token exists; create one with: tasker token create --role admin")
		}
	}
	guard, err := auth.NewGuard(d.Mode, store, limits, nil, log)
	if err != nil {
		return apiSecurity{}, err
	}
	guard.WatchRevocations(hub) // a revoked token's websockets close in every process
	rateLog, burstLog := any(limits.RatePerSecond), any(limits.Burst)
	if math.IsInf(limits.RatePerSecond, 1) {
		rateLog, burstLog = "unlimited", "-"
	}
	log.Info("serve: API access", "authentication", d.Mode.String(),
		"rate_per_token_per_process", rateLog, "burst", burstLog,
		"max_body_bytes", limits.MaxBodyBytes, "statement_timeout", limits.StatementTimeout,
		"max_subscriptions_per_connection", limits.MaxSubscriptions, "max_subscriptions_per_process", limits.MaxProcessSubscriptions, "max_ws_message_bytes", limits.MaxWebsocketMessageBytes)
	return apiSecurity{guard: guard, metrics: metrics.New(metrics.Options{DB: db, Hub: hub, Log: log})}, nil
}
