package replica

import "github.com/prometheus/client_golang/prometheus"

var (
	routedDesc = prometheus.NewDesc("tasker_db_routed_statements_total",
		"Statements (and transactions) the replica router sent to each server: server is primary or replica.",
		[]string{"server", "replica"}, nil)
	upDesc = prometheus.NewDesc("tasker_replica_up",
		"1 while the replica serves reads, 0 while it is out of service.", []string{"replica"}, nil)
	lagDesc = prometheus.NewDesc("tasker_replica_lag_seconds",
		"The replica's replay lag at its last probe (0 when it has replayed everything it received).",
		[]string{"replica"}, nil)
	retriedDesc = prometheus.NewDesc("tasker_replica_reads_retried_total",
		"Reads that met a replica failure and ran again on the primary: scope statement, one read that failed before its first row; "+
			"scope request, a whole read-only request (GraphQL query) that met it after a read's first row.",
		[]string{"scope"}, nil)
)

// Collector exposes the router's per-server statement counters, its retries on the primary and
// each replica's state as Prometheus metrics.
func (r *Router) Collector() prometheus.Collector { return collector{r} }

type collector struct{ r *Router }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- routedDesc
	ch <- upDesc
	ch <- lagDesc
	ch <- retriedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(routedDesc, prometheus.CounterValue, float64(c.r.PrimaryStatements()), "primary", "")
	ch <- prometheus.MustNewConstMetric(retriedDesc, prometheus.CounterValue, float64(c.r.RetriedStatements()), "statement")
	ch <- prometheus.MustNewConstMetric(retriedDesc, prometheus.CounterValue, float64(c.r.RetriedRequests()), "request")
	for _, rep := range c.r.replicas {
		rep.mu.Lock()
		up, lag := rep.up, rep.lagMs
		rep.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(routedDesc, prometheus.CounterValue, float64(rep.Statements()), "replica", rep.Name)
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, v, rep.Name)
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, lag/1000, rep.Name)
	}
}
