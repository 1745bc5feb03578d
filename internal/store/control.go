package store

import "context"

// TaskOfStep returns the task of a step; ok is false when the step does not exist.
func (s *Store) TaskOfStep(ctx context.Context, stepID int64) (taskID int64, ok bool, err error) {
	var ids []int64
	if err := s.conn(ctx).Raw(`SELECT task_id FROM tasker_workflow_steps WHERE workflow_step_id = ?`, stepID).Scan(&ids).Error; err != nil {
		return 0, false, err
	}
	if len(ids) == 0 {
		return 0, false, nil
	}
	return ids[0], true, nil
}

// UnfinishedSteps lists, in id order, the steps of a task that are not terminal (complete,
// cancelled, resolved_manually).
func (s *Store) UnfinishedSteps(ctx context.Context, taskID int64) ([]int64, error) {
	var steps []int64
	err := s.conn(ctx).Raw(`
			SELECT ws.workflow_step_id
			FROM tasker_workflow_steps ws
			LEFT JOIN tasker_workflow_step_transitions t ON t.workflow_step_id = ws.workflow_step_id AND t.most_recent
			WHERE ws.task_id = ? AND coalesce(t.to_state, 'pending') NOT IN ('complete', 'cancelled', 'resolved_manually')
			ORDER BY ws.workflow_step_id`, taskID).Scan(&steps).Error
	return steps, err
}

// StepRetry is what decides how an operator's retry of a step changes it.
type StepRetry struct {
	Attempts              int
	RetryLimit            int
	Retryable             bool
	BackoffRequestSeconds *int
}

// StepRetryOf reads a step's attempts, retry limit (3 when unset), whether it is retryable,
// and the delay its last failure asked for.
func (s *Store) StepRetryOf(ctx context.Context, stepID int64) (StepRetry, error) {
	var row StepRetry
	err := s.conn(ctx).Raw(`SELECT coalesce(attempts, 0) AS attempts, coalesce(retry_limit, 3) AS retry_limit,
			retryable, backoff_request_seconds FROM tasker_workflow_steps WHERE workflow_step_id = ?`,
		stepID).Scan(&row).Error
	return row, err
}

// GrantRetry sets a step's retry limit, makes it retryable and clears its requested delay.
func (s *Store) GrantRetry(ctx context.Context, stepID int64, retryLimit int) error {
	return s.conn(ctx).Exec(`UPDATE tasker_workflow_steps
			SET retry_limit = ?, retryable = true, backoff_request_seconds = NULL, updated_at = now()
			WHERE workflow_step_id = ?`, retryLimit, stepID).Error
}
