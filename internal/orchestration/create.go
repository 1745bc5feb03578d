package orchestration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/template"
)

// ErrNotFound is wrapped by errors about something that does not exist (an unknown template).
var ErrNotFound = errors.New("not found")

// ErrValidation is wrapped by errors about a request that is wrong as given (a context that does
// not match the template's schema, a malformed field). Such a request writes nothing.
var ErrValidation = errors.New("invalid request")

// ValidationError lists what is wrong with a request. errors.Is(err, ErrValidation) holds.
type ValidationError struct {
	// Field is the request field at fault ("context", "tags", ...).
	Field    string
	Problems []string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, strings.Join(e.Problems, "; "))
}

// Is makes errors.Is(err, ErrValidation) true.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

// CreateTaskRequest asks for one task of a template.
type CreateTaskRequest struct {
	// Namespace (default "default"), Name and Version (empty: the newest) select the template.
	Namespace string
	Name      string
	Version   string
	// Context is the task input, a JSON object checked against the template's context schema
	// (empty: {}).
	Context json.RawMessage
	// Initiator, SourceSystem (at most 128 characters) and Reason (255) describe who asked and why.
	Initiator    string
	SourceSystem string
	Reason       string
	// Tags is a JSON object or array stored with the task (empty: {}).
	Tags json.RawMessage
	// IdempotencyKey, when set, de-duplicates creation: a second request with the same key
	// returns the task created by the first.
	IdempotencyKey string
}

// IdentityHash is the identity_hash of a task created with idempotency key key: a fixed-length
// digest, so any key fits the column.
func IdentityHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "key:" + hex.EncodeToString(sum[:])
}

func randomIdentity() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating identity: %w", err)
	}
	return "rnd:" + hex.EncodeToString(b[:]), nil
}

// querier is what a *sql.Tx offers; inside a GORM transaction tx.Statement.ConnPool is one.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// CreateTask creates a task of a registered template with all its steps and edges, in one
// transaction, or writes nothing. Steps take the template's retry defaults and are created,
// like the task, without a transition row (state pending). Steps and edges are written with
// one set-based statement each, whatever the template's size. The template is registered in
// the template tables first when it is not yet.
//
// With an IdempotencyKey whose task already exists, CreateTask returns that task and
// created=false; concurrent requests with one key create one task. An unknown template is an
// error wrapping ErrNotFound; a bad request (context refused by the schema, malformed tags,
// a key already used for another template) wraps ErrValidation and lists what was wrong.
func CreateTask(ctx context.Context, db *gorm.DB, reg *template.Registry, req CreateTaskRequest) (task models.Task, created bool, err error) {
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	if req.Name == "" {
		return task, false, &ValidationError{Field: "template", Problems: []string{"a template name is required"}}
	}
	tpl, err := reg.Lookup(req.Namespace, req.Name, req.Version)
	if err != nil {
		return task, false, fmt.Errorf("creating task: %w: %w", ErrNotFound, err)
	}
	taskContext, tags, err := checkRequest(tpl, req)
	if err != nil {
		return task, false, err
	}
	identity := ""
	if req.IdempotencyKey != "" {
		identity = IdentityHash(req.IdempotencyKey)
	} else if identity, err = randomIdentity(); err != nil {
		return task, false, err
	}
	if req.IdempotencyKey != "" {
		// A repeated request returns its task without touching the template tables.
		existing, found, err := taskByIdentity(ctx, db, identity, req.IdempotencyKey, tpl)
		if err != nil || found {
			return existing, false, err
		}
	}
	regn, err := template.Ensure(ctx, db, tpl)
	if err != nil {
		return task, false, fmt.Errorf("creating task of %s: %w", tpl.Key(), err)
	}

	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q, ok := tx.Statement.ConnPool.(querier)
		if !ok {
			return errors.New("the transaction cannot run queries")
		}
		var taskID, namedTaskID int64
		err := q.QueryRowContext(ctx, `
			INSERT INTO tasker_tasks (named_task_id, initiator, source_system, reason, tags, context, identity_hash)
			VALUES ($1, NULLIF($2, ''), NULLIF($3, ''), NULLIF($4, ''), $5::jsonb, $6::jsonb, $7)
			ON CONFLICT (identity_hash) DO NOTHING
			RETURNING task_id`,
			regn.NamedTaskID, req.Initiator, req.SourceSystem, req.Reason, string(tags), string(taskContext), identity,
		).Scan(&taskID)
		if errors.Is(err, sql.ErrNoRows) {
			// The key is taken: a committed task holds it (ON CONFLICT waited for any concurrent
			// insert of the same key to finish).
			if err := q.QueryRowContext(ctx, `SELECT task_id, named_task_id FROM tasker_tasks WHERE identity_hash = $1`,
				identity).Scan(&taskID, &namedTaskID); err != nil {
				return fmt.Errorf("reading the task of idempotency key %q: %w", req.IdempotencyKey, err)
			}
			if namedTaskID != regn.NamedTaskID {
				return keyReused(req.IdempotencyKey, taskID, tpl)
			}
			return tx.First(&task, taskID).Error
		}
		if err != nil {
			return fmt.Errorf("writing task: %w", err)
		}
		created = true
		if err := insertSteps(ctx, q, tpl, regn, taskID); err != nil {
			return err
		}
		return tx.First(&task, taskID).Error
	})
	if err != nil {
		return models.Task{}, false, fmt.Errorf("creating task of %s: %w", tpl.Key(), err)
	}
	return task, created, nil
}

// checkRequest validates the request against the template and returns the context and tags as
// compact JSON.
func checkRequest(tpl *template.Template, req CreateTaskRequest) (taskContext, tags json.RawMessage, err error) {
	taskContext = req.Context
	if len(bytes.TrimSpace(taskContext)) == 0 {
		taskContext = json.RawMessage(`{}`)
	}
	if err := tpl.ValidateContext(taskContext); err != nil {
		var ce *template.ContextError
		if errors.As(err, &ce) {
			return nil, nil, &ValidationError{Field: "context", Problems: ce.Problems}
		}
		return nil, nil, &ValidationError{Field: "context", Problems: []string{err.Error()}}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, taskContext); err != nil {
		return nil, nil, &ValidationError{Field: "context", Problems: []string{err.Error()}}
	}
	taskContext = buf.Bytes()

	tags = req.Tags
	if len(bytes.TrimSpace(tags)) == 0 {
		tags = json.RawMessage(`{}`)
	}
	var tagValue any
	if err := json.Unmarshal(tags, &tagValue); err != nil {
		return nil, nil, &ValidationError{Field: "tags", Problems: []string{"not valid JSON: " + err.Error()}}
	}
	switch tagValue.(type) {
	case map[string]any, []any:
	default:
		return nil, nil, &ValidationError{Field: "tags", Problems: []string{"must be a JSON object or array"}}
	}
	var problems []string
	for _, f := range []struct {
		name, value string
		max         int
	}{{"initiator", req.Initiator, 128}, {"source_system", req.SourceSystem, 128}, {"reason", req.Reason, 255}} {
		if n := len([]rune(f.value)); n > f.max {
			problems = append(problems, fmt.Sprintf("%s is %d characters long, at most %d allowed", f.name, n, f.max))
		}
	}
	if len(problems) > 0 {
		return nil, nil, &ValidationError{Field: "request", Problems: problems}
	}
	return taskContext, tags, nil
}

// insertSteps writes the steps of a new task and then its edges, one statement each.
func insertSteps(ctx context.Context, q querier, tpl *template.Template, regn template.Registration, taskID int64) error {
	n := len(tpl.Steps)
	namedIDs := make([]int64, n)
	retryable := make([]bool, n)
	limits := make([]int32, n)
	skippable := make([]bool, n)
	inputs := make([]string, n)
	stepOfNamed := make(map[int64]string, n)
	for i, s := range tpl.Steps {
		id, ok := regn.NamedStepIDs[s.Name]
		if !ok {
			return fmt.Errorf("step %q of %s has no registered named step", s.Name, tpl.Key())
		}
		namedIDs[i], retryable[i], limits[i], skippable[i], inputs[i] = id, s.Retryable, int32(s.RetryLimit), s.Skippable, string(s.Inputs)
		stepOfNamed[id] = s.Name
	}
	rows, err := q.QueryContext(ctx, `
		INSERT INTO tasker_workflow_steps (task_id, named_step_id, retryable, retry_limit, skippable, inputs)
		SELECT $1, u.named_step_id, u.retryable, u.retry_limit, u.skippable, NULLIF(u.inputs, '')::jsonb
		FROM unnest($2::bigint[], $3::boolean[], $4::integer[], $5::boolean[], $6::text[])
			WITH ORDINALITY AS u (named_step_id, retryable, retry_limit, skippable, inputs, ord)
		ORDER BY u.ord
		RETURNING workflow_step_id, named_step_id`,
		taskID, namedIDs, retryable, limits, skippable, inputs)
	if err != nil {
		return fmt.Errorf("writing steps: %w", err)
	}
	stepID := make(map[string]int64, n)
	for rows.Next() {
		var id, named int64
		if err := rows.Scan(&id, &named); err != nil {
			rows.Close()
			return fmt.Errorf("writing steps: %w", err)
		}
		stepID[stepOfNamed[named]] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("writing steps: %w", err)
	}
	if len(stepID) != n {
		return fmt.Errorf("writing steps: %d of %d written", len(stepID), n)
	}

	edges := tpl.Edges()
	if len(edges) == 0 {
		return nil
	}
	from := make([]int64, len(edges))
	to := make([]int64, len(edges))
	for i, e := range edges {
		from[i], to[i] = stepID[e.From], stepID[e.To]
	}
	if _, err := q.ExecContext(ctx, `
		INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name)
		SELECT u.from_step_id, u.to_step_id, 'provides'
		FROM unnest($1::bigint[], $2::bigint[]) AS u (from_step_id, to_step_id)`, from, to); err != nil {
		return fmt.Errorf("writing edges: %w", err)
	}
	return nil
}

func keyReused(key string, taskID int64, tpl *template.Template) error {
	return &ValidationError{Field: "idempotency_key", Problems: []string{fmt.Sprintf(
		"key %q already created task %d, of another template than %s", key, taskID, tpl.Key())}}
}

// taskByIdentity reads the task holding identity, checking that it is a task of tpl.
func taskByIdentity(ctx context.Context, db *gorm.DB, identity, key string, tpl *template.Template) (models.Task, bool, error) {
	var found struct {
		models.Task
		Namespace string
		Name      string
		Version   string
	}
	err := db.WithContext(ctx).Raw(`
		SELECT t.*, ns.name AS namespace, nt.name AS name, nt.version AS version
		FROM tasker_tasks t
		JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
		WHERE t.identity_hash = ?`, identity).Scan(&found).Error
	if err != nil {
		return models.Task{}, false, fmt.Errorf("reading the task of idempotency key %q: %w", key, err)
	}
	if found.TaskID == 0 {
		return models.Task{}, false, nil
	}
	if found.Namespace != tpl.Namespace || found.Name != tpl.Name || found.Version != tpl.Version {
		return models.Task{}, false, keyReused(key, found.TaskID, tpl)
	}
	return found.Task, true, nil
}
