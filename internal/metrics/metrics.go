// Package metrics exposes the service's Prometheus metrics at /metrics, from a registry of
// its own (never the global default):
//
//   - tasker_graphql_requests_total, tasker_graphql_request_duration_seconds and
//     tasker_graphql_sql_statements, by operation type and root field (schema names only, so
//     the label values are bounded), from a gqlgen extension;
//   - tasker_http_requests_total and tasker_http_request_duration_seconds, by handler and
//     status, from HTTP middleware that also gives every request an id and logs it;
//   - tasker_step_executions_total and tasker_step_duration_seconds by step name and outcome,
//     tasker_step_claim_latency_seconds (ready → started) and tasker_steps_recovered_total
//     (claims taken back after their lease ran out), as an orchestration.Observer;
//   - tasker_ready_steps (the queue depth) and the read models' age, staleness and last
//     refresh duration, read from the database on each scrape under a timeout;
//   - tasker_subscribers (events hub), the connection pool (go_sql_*), Go and process metrics.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/orchestration"
)

// Options are what the metrics read. Every field is optional except Log defaults to discard.
type Options struct {
	// DB is read on each scrape (queue depth, read models); its pool is reported as pool
	// statistics.
	DB *gorm.DB
	// Hub reports the number of event subscribers.
	Hub *events.Hub
	// ScrapeTimeout bounds the database reads of one scrape (default 2s).
	ScrapeTimeout time.Duration
	Log           *slog.Logger
}

// Metrics holds the registry and the instruments fed by the rest of the service.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	gqlRequests   *prometheus.CounterVec
	gqlDuration   *prometheus.HistogramVec
	gqlStatements *prometheus.HistogramVec
	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	stepRuns      *prometheus.CounterVec
	stepDuration  *prometheus.HistogramVec
	claimLatency  *prometheus.HistogramVec
	workerWait    *prometheus.HistogramVec
	recovered     prometheus.Counter
	callDuration  *prometheus.HistogramVec
	callSteps     *prometheus.HistogramVec
}

var _ orchestration.Observer = (*Metrics)(nil)

// New creates the registry and registers every collector.
func New(opts Options) *Metrics {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = 2 * time.Second
	}
	m := &Metrics{reg: prometheus.NewRegistry(), log: opts.Log}
	durations := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m.gqlRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tasker_graphql_requests_total",
		Help: "GraphQL responses (one per query or mutation, one per subscription event), by operation type, root field and outcome (ok, error, or cancelled when the client went away before the answer).",
	}, []string{"type", "field", "outcome"})
	m.gqlDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_graphql_request_duration_seconds",
		Help:    "Time to produce a GraphQL response, by operation type and root field.",
		Buckets: durations,
	}, []string{"type", "field"})
	m.gqlStatements = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_graphql_sql_statements",
		Help:    "SQL statements run to produce one GraphQL response, by operation type and root field.",
		Buckets: []float64{0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100},
	}, []string{"type", "field"})
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tasker_http_requests_total",
		Help: "HTTP requests, by handler and status code.",
	}, []string{"handler", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_http_request_duration_seconds",
		Help:    "HTTP request duration, by handler (a websocket connection counts its whole life).",
		Buckets: durations,
	}, []string{"handler"})
	m.stepRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tasker_step_executions_total",
		Help: "Step attempts run by this process's workers, by step name and outcome.",
	}, []string{"step", "outcome"})
	m.stepDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_step_duration_seconds",
		Help:    "Handler run time of step attempts, by step name and outcome.",
		Buckets: durations,
	}, []string{"step", "outcome"})
	m.claimLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_step_claim_latency_seconds",
		Help:    "How long a step had been ready when a worker of this process claimed it, by step name.",
		Buckets: durations,
	}, []string{"step"})
	m.workerWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_step_worker_wait_seconds",
		Help:    "How long a step claimed by this process waited for one of its workers, from its claim to its handler's start, by step name: a prefetched step waits for a handler to return (TASKER_PREFETCH), the others start at once.",
		Buckets: durations,
	}, []string{"step"})
	m.recovered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tasker_steps_recovered_total",
		Help: "Steps whose claim lease ran out (their worker died or lost the database), taken back by this process's recovery: an attempt in progress counts as lost and fails, so the retry rules apply.",
	})
	m.callDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_engine_call_duration_seconds",
		Help:    "Time of the engine's calls into the database that succeeded, round trip included, by call: claim (a claim of its own), record (a recording without a claim), record_and_claim (a recording and the claim after it, one transaction).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	}, []string{"call"})
	// The steps of a call: buckets up to 8192, since a call carries up to an engine's workers
	// and prefetch together (by default five times the workers: 500 at 100 workers).
	m.callSteps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tasker_engine_call_steps",
		Help:    "Steps handled by one engine call that succeeded, by call and kind: the attempts it recorded (recorded) or the steps it claimed (claimed). Small batches under load mean idle workers; calls slow for their size, a busy database.",
		Buckets: append([]float64{0}, prometheus.ExponentialBuckets(1, 2, 14)...),
	}, []string{"call", "kind"})
	m.reg.MustRegister(m.gqlRequests, m.gqlDuration, m.gqlStatements, m.httpRequests, m.httpDuration,
		m.stepRuns, m.stepDuration, m.claimLatency, m.workerWait, m.recovered, m.callDuration, m.callSteps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.DB != nil {
		// The pool's statistics are those of the *sql.DB under the handle (the primary's).
		if pool, err := opts.DB.DB(); err == nil {
			m.reg.MustRegister(collectors.NewDBStatsCollector(pool, "tasker"))
		}
		m.reg.MustRegister(&dbCollector{db: opts.DB, timeout: opts.ScrapeTimeout, log: opts.Log})
	}
	if opts.Hub != nil {
		hub := opts.Hub
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tasker_subscribers",
			Help: "Subscriptions to this process's events hub (GraphQL subscriptions, workers, the refresher).",
		}, func() float64 { return float64(hub.Subscribers()) }))
	}
	return m
}

// Registry returns the registry, to register more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{m.log}, Timeout: 30 * time.Second})
}

// StepClaimed implements orchestration.Observer.
func (m *Metrics) StepClaimed(step string, readyFor time.Duration) {
	m.claimLatency.WithLabelValues(step).Observe(readyFor.Seconds())
}

// StepStarted implements orchestration.Observer.
func (m *Metrics) StepStarted(step string, waited time.Duration) {
	m.workerWait.WithLabelValues(step).Observe(waited.Seconds())
}

// StepFinished implements orchestration.Observer.
func (m *Metrics) StepFinished(step, outcome string, took time.Duration) {
	m.stepRuns.WithLabelValues(step, outcome).Inc()
	m.stepDuration.WithLabelValues(step, outcome).Observe(took.Seconds())
}

// StepsRecovered implements orchestration.Observer.
func (m *Metrics) StepsRecovered(n int) { m.recovered.Add(float64(n)) }

// EngineCall implements orchestration.Observer: a claim reports the steps it claimed, a
// recording the attempts it recorded, a recording with its claim both.
func (m *Metrics) EngineCall(call string, recorded, claimed int, took time.Duration) {
	m.callDuration.WithLabelValues(call).Observe(took.Seconds())
	if call != orchestration.CallClaim {
		m.callSteps.WithLabelValues(call, "recorded").Observe(float64(recorded))
	}
	if call != orchestration.CallRecord {
		m.callSteps.WithLabelValues(call, "claimed").Observe(float64(claimed))
	}
}

type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Error("metrics: serving /metrics", "error", v) }

// dbCollector reads the queue depth and the read models' freshness on each scrape. A read that
// fails or times out is logged and its metrics are left out of that scrape; it never fails
// the scrape.
type dbCollector struct {
	db      *gorm.DB
	timeout time.Duration
	log     *slog.Logger
}

var (
	readyStepsDesc = prometheus.NewDesc("tasker_ready_steps",
		"Steps ready to run and not claimed (the queue depth), of tasks that are pending or in progress.", nil, nil)
	ageDesc = prometheus.NewDesc("tasker_read_model_age_seconds",
		"How old the data of a materialized read model is: now minus the time its last refresh read.", []string{"view"}, nil)
	staleDesc = prometheus.NewDesc("tasker_read_model_stale_seconds",
		"How long a materialized read model has been stale (writes not yet refreshed into it); 0 when fresh.", []string{"view"}, nil)
	refreshDesc = prometheus.NewDesc("tasker_read_model_refresh_duration_seconds",
		"Duration of the last successful refresh of a materialized read model.", []string{"view"}, nil)
	scrapeErrDesc = prometheus.NewDesc("tasker_metrics_db_scrape_errors",
		"Database reads that failed during this scrape (their metrics are missing from it).", nil, nil)
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{readyStepsDesc, ageDesc, staleDesc, refreshDesc, scrapeErrDesc} {
		ch <- d
	}
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	failures := 0
	ready, err := models.CountReadySteps(ctx, c.db)
	if err != nil {
		failures++
		c.log.Warn("metrics: counting ready steps", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(readyStepsDesc, prometheus.GaugeValue, float64(ready))
	}
	if err := c.collectReadModels(ctx, ch); err != nil {
		failures++
		c.log.Warn("metrics: reading read-model freshness", "error", err)
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, float64(failures))
}

func (c *dbCollector) collectReadModels(ctx context.Context, ch chan<- prometheus.Metric) error {
	states, err := models.ReadModelFreshness(ctx, c.db)
	if err != nil {
		return err
	}
	for _, st := range states {
		if st.AgeSeconds >= 0 {
			ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, st.AgeSeconds, st.Name)
		}
		ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, st.StaleSeconds, st.Name)
		if st.RefreshSeconds >= 0 {
			ch <- prometheus.MustNewConstMetric(refreshDesc, prometheus.GaugeValue, st.RefreshSeconds, st.Name)
		}
	}
	return nil
}
