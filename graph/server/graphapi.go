// Package server assembles the GraphQL HTTP endpoint: gqlgen's handler.New with explicit
// transports (POST, GET, websocket speaking graphql-transport-ws and graphql-ws), an LRU
// query cache, automatic persisted queries, complexity and depth limits, per-response
// dataloaders and statement counting, one error presenter, panic recovery, and the GraphiQL
// playground.
//
// Limits are checked while the operation is validated, before any resolver runs, so a
// refused request runs no SQL. In front of gqlgen, a request layer refuses what its
// transports cannot serve with a coded error (checkRequests), and every string a client
// sends is checked for NUL characters, invalid UTF-8 and lone surrogates (inputCheck). Every
// refusal carries extensions.code; SECURITY.md tables them and refusals_test.go holds the
// server to that table.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/feed"
	"github.com/taskerhq/tasker/graph/generated"
	"github.com/taskerhq/tasker/graph/loaders"
	"github.com/taskerhq/tasker/graph/resolvers"
	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/metrics"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/tracing"
	"github.com/taskerhq/tasker/web"
)

// Config tunes the endpoint. Zero fields take the defaults.
type Config struct {
	// MaxComplexity refuses operations above this complexity (default 100,000): each field
	// counts 1 plus its children times the size of its list (see complexityLimit).
	MaxComplexity int
	// MaxDepth refuses operations nesting fields deeper than this (default 15);
	// introspection fields do not count.
	MaxDepth int
	// MaxInFlightComplexity bounds the summed complexity of the queries and mutations the
	// process runs at once (default 4 × MaxComplexity); an operation that does not fit within
	// 5 s is refused with SERVER_BUSY.
	MaxInFlightComplexity int
	// MaxResponseBytes replaces a response whose data is larger than this with the error
	// RESPONSE_TOO_LARGE (default 16 MiB): a backstop behind the complexity limit for values
	// of unbounded size such as task contexts.
	MaxResponseBytes int
	// QueryStats adds extensions.queryStats (sqlStatements, dbTimeMs, servedBy: "primary" or
	// "replica", replicaLagMs) to every response.
	QueryStats bool
	// QueryCacheSize is the number of parsed queries kept (default 1,000).
	QueryCacheSize int
	// Loaders tunes dataloader batching.
	Loaders loaders.Options
	// Feed tunes subscription streams.
	Feed feed.Options
}

// Defaults of Config.
const (
	DefaultMaxComplexity = 100_000
	DefaultMaxDepth      = 15
	// DefaultMaxResponseBytes is 16 MiB.
	DefaultMaxResponseBytes = 16 << 20
)

func (c Config) withDefaults() Config {
	if c.MaxComplexity <= 0 {
		c.MaxComplexity = DefaultMaxComplexity
	}
	if c.MaxDepth <= 0 {
		c.MaxDepth = DefaultMaxDepth
	}
	if c.MaxInFlightComplexity <= 0 {
		c.MaxInFlightComplexity = 4 * c.MaxComplexity
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.QueryCacheSize <= 0 {
		c.QueryCacheSize = 1000
	}
	return c
}

// ConfigFromEnv reads TASKER_GRAPHQL_MAX_COMPLEXITY, TASKER_GRAPHQL_MAX_DEPTH,
// TASKER_GRAPHQL_MAX_RESPONSE_BYTES, TASKER_GRAPHQL_MAX_INFLIGHT_COMPLEXITY and
// TASKER_QUERY_STATS (1/true/0/false, default off) through getenv (internal/config).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var cfg Config
	for _, v := range []struct {
		name string
		dst  *int
	}{
		{"TASKER_GRAPHQL_MAX_COMPLEXITY", &cfg.MaxComplexity},
		{"TASKER_GRAPHQL_MAX_DEPTH", &cfg.MaxDepth},
		{"TASKER_GRAPHQL_MAX_RESPONSE_BYTES", &cfg.MaxResponseBytes},
		{"TASKER_GRAPHQL_MAX_INFLIGHT_COMPLEXITY", &cfg.MaxInFlightComplexity},
	} {
		if s := getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return cfg, fmt.Errorf("%s=%q is not a positive integer", v.name, s)
			}
			*v.dst = n
		}
	}
	if s := getenv("TASKER_QUERY_STATS"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return cfg, fmt.Errorf("TASKER_QUERY_STATS=%q is not a boolean (1 or 0)", s)
		}
		cfg.QueryStats = b
	}
	return cfg, nil
}

// Deps are what the API reads and listens to.
type Deps struct {
	// DB must count statements with querystats.Tracer for queryStats to be meaningful.
	DB  *gorm.DB
	Hub *events.Hub
	Log *slog.Logger
	// Templates are what createTask can instantiate.
	Templates *template.Registry
	// Guard authenticates callers, checks their role and enforces the request limits (see
	// internal/auth). Nil admits every request without authentication or limits beyond
	// depth and complexity: the server always sets one (auth.Off when it runs open).
	Guard *auth.Guard
	// Metrics, when set, counts and times responses and instruments the HTTP handler.
	Metrics *metrics.Metrics
	// Refresher serves refreshReadModel. Nil makes that mutation answer SERVICE_UNAVAILABLE;
	// the dashboard and readModels queries work without it.
	Refresher *refresh.Refresher
}

// API is the GraphQL endpoint and its playground.
type API struct {
	feed  *feed.Feed
	query http.Handler
	cfg   Config
	log   *slog.Logger
}

// New builds the API.
func New(cfg Config, deps Deps) *API {
	cfg = cfg.withDefaults()
	fd := feed.New(deps.DB, deps.Hub, deps.Log, cfg.Feed)
	res := &resolvers.Resolver{DB: deps.DB, Feed: fd,
		Service: orchestration.NewService(deps.DB, deps.Templates), Refresher: deps.Refresher}
	gcfg := generated.Config{Resolvers: res}
	es := generated.NewExecutableSchema(gcfg)
	srv := handler.New(es)

	ws := transport.Websocket{
		KeepAlivePingInterval: 10 * time.Second,
		InitTimeout:           10 * time.Second,
	}
	ws.Implementation = checkedWebsocket{inner: transport.CoderWebsocketImplementation{}}
	if deps.Guard != nil {
		ws.Implementation = deps.Guard.WebsocketImplementation(ws.Implementation)
		ws.InitFunc = deps.Guard.WebsocketInit
		limit := deps.Guard.Limits().MaxWebsocketMessageBytes
		ws.PayloadReadLimit = &limit
	}
	srv.AddTransport(ws)
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(postTransport{})

	srv.SetQueryCache(lru.New[*ast.QueryDocument](cfg.QueryCacheSize))
	tracing.UseGraphQL(srv) // first: its operation spans enclose everything below
	srv.Use(extension.Introspection{})
	srv.Use(codedAPQ{extension.AutomaticPersistedQuery{Cache: lru.New[string](cfg.QueryCacheSize)}})
	if deps.Guard != nil {
		srv.Use(deps.Guard) // before the limits: who may ask comes before how much
	}
	srv.Use(inputCheck{})
	srv.Use(subscriptionTransport{})
	srv.Use(streamEnd{})
	srv.Use(depthLimit{max: cfg.MaxDepth})
	srv.Use(newComplexityLimit(cfg.MaxComplexity, cfg.MaxInFlightComplexity))
	srv.Use(statementCounter{})
	if deps.Metrics != nil {
		// Inside statementCounter, whose counter it reads; outside perResponse, so that a
		// query that ran again on the primary (a replica went away) counts once, as answered.
		srv.Use(deps.Metrics.GraphQL())
	}
	srv.Use(perResponse{db: deps.DB, router: database.Router(deps.DB), es: es, log: deps.Log,
		loaders: cfg.Loaders, stats: cfg.QueryStats, maxBytes: cfg.MaxResponseBytes})

	p := presenter{log: deps.Log}
	srv.SetErrorPresenter(p.present)
	srv.SetRecoverFunc(p.recover)

	var h http.Handler = checkRequests(srv)
	if deps.Guard != nil {
		h = deps.Guard.HTTP(h)
	}
	h = withRequestID(h)
	if deps.Metrics != nil {
		h = deps.Metrics.Middleware("graphql", h)
	}
	return &API{query: h, cfg: cfg, log: deps.Log, feed: fd}
}

// Config returns the effective configuration.
func (a *API) Config() Config { return a.cfg }

// Subscribers counts the subscription streams open on this API.
func (a *API) Subscribers() int { return a.feed.Subscribers() }

// Handler serves /query: POST, GET and websocket upgrades.
func (a *API) Handler() http.Handler { return a.query }

// Mount registers /query, the playground at / (its files under /playground/) and the task
// console under /ui/ on mux.
func (a *API) Mount(mux *http.ServeMux) {
	mux.Handle("/query", a.query)
	pg := Playground("/query")
	mux.Handle("GET /{$}", pg)
	mux.Handle("GET "+PlaygroundPrefix, pg)
	web.Mount(mux)
}

// statementCounter gives every response (each query or mutation, each subscription event) a
// querystats.Counter, which perResponse reports and the metrics extension records.
type statementCounter struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
} = statementCounter{}

func (statementCounter) ExtensionName() string                   { return "StatementCounter" }
func (statementCounter) Validate(graphql.ExecutableSchema) error { return nil }
func (statementCounter) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	ctx, _ = querystats.WithCounter(ctx)
	return next(ctx)
}

// perResponse gives every response (each query or mutation, each subscription event) fresh
// dataloaders and its replica route (readafter.go), runs a query again on the primary when a
// replica failed under it (rerun.go), and reports the statement counter and who served when
// stats are on. Per response rather than per connection, so a websocket connection never
// serves stale cached rows. It is the innermost response interceptor: a query that runs again
// is executed anew (es) inside every other extension, which sees one response.
type perResponse struct {
	db       *gorm.DB
	router   *replica.Router // nil without replicas
	es       graphql.ExecutableSchema
	log      *slog.Logger
	loaders  loaders.Options
	stats    bool
	maxBytes int
}

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
} = perResponse{}

func (perResponse) ExtensionName() string                   { return "PerResponseLoadersAndStats" }
func (perResponse) Validate(graphql.ExecutableSchema) error { return nil }
func (p perResponse) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	counter := querystats.FromContext(ctx)
	if counter == nil {
		ctx, counter = querystats.WithCounter(ctx)
	}
	rctx, route, refused := p.route(ctx)
	if refused != nil {
		return refused
	}
	resp := next(loaders.With(rctx, loaders.New(p.db, p.loaders)))
	if p.replicaFailed(rctx, route, resp) {
		rctx, route = p.router.RerunOnPrimary(ctx)
		resp = p.again(loaders.With(rctx, loaders.New(p.db, p.loaders)))
	}
	if resp != nil && len(resp.Data) > p.maxBytes {
		err := gqlerror.Errorf("the response is %d bytes, over the limit of %d: ask for fewer items or fields", len(resp.Data), p.maxBytes)
		errcode.Set(err, codeResponseTooLarge)
		resp.Data, resp.Errors = nil, gqlerror.List{err}
	}
	if resp == nil {
		return resp
	}
	var stats map[string]any
	if p.stats {
		stats = map[string]any{
			"sqlStatements": counter.Statements(),
			"dbTimeMs":      float64(counter.Duration().Microseconds()) / 1000,
		}
	}
	p.served(rctx, route, resp, stats)
	if stats != nil {
		if resp.Extensions == nil {
			resp.Extensions = map[string]any{}
		}
		resp.Extensions["queryStats"] = stats
	}
	return resp
}
