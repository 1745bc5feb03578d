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
// like the task, without a transition row (state pending), with their DAG depth computed from
// the template. It is CreateTasks with a batch of one: the number of statements does not
// depend on the template's size. The template is registered in the template tables first when
// it is not yet.
//
// With an IdempotencyKey whose task already exists, CreateTask returns that task and
// created=false; concurrent requests with one key create one task. An unknown template is an
// error wrapping ErrNotFound; a bad request (context refused by the schema, malformed tags,
// a key already used for another template) wraps ErrValidation and lists what was wrong.
func CreateTask(ctx context.Context, db *gorm.DB, reg *template.Registry, req CreateTaskRequest) (task models.Task, created bool, err error) {
	res, err := CreateTasks(ctx, db, reg, []CreateTaskRequest{req})
	if err != nil {
		return task, false, err
	}
	if len(res.Errors) > 0 {
		if errors.Is(res.Errors[0].Err, ErrNotFound) {
			return task, false, fmt.Errorf("creating task: %w", res.Errors[0].Err)
		}
		return task, false, res.Errors[0].Err
	}
	if err := db.WithContext(ctx).First(&task, res.Tasks[0].TaskID).Error; err != nil {
		return models.Task{}, false, fmt.Errorf("reading task %d: %w", res.Tasks[0].TaskID, err)
	}
	return task, res.Tasks[0].Created, nil
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
	field := ""
	for _, f := range []struct {
		name, value string
		max         int
	}{{"initiator", req.Initiator, 128}, {"source_system", req.SourceSystem, 128}, {"reason", req.Reason, 255}} {
		if n := len([]rune(f.value)); n > f.max {
			problems = append(problems, fmt.Sprintf("%s is %d characters long, at most %d allowed", f.name, n, f.max))
			if field == "" {
				field = f.name
			}
		}
	}
	if len(problems) > 0 {
		// Field names the first field at fault; Problems lists every one.
		return nil, nil, &ValidationError{Field: field, Problems: problems}
	}
	return taskContext, tags, nil
}

func keyReused(key string, taskID int64, tpl *template.Template) error {
	return &ValidationError{Field: "idempotency_key", Problems: []string{fmt.Sprintf(
		"key %q already created task %d, of another template than %s", key, taskID, tpl.Key())}}
}
