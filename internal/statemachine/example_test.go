package statemachine_test

import (
	"fmt"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
)

// Every move has an event name; terminal states allow none (a task may still be cancelled
// from complete by an operator).
func ExampleAllowed() {
	fmt.Println(sm.Allowed(sm.KindStep, models.StateError))
	fmt.Println(sm.Allowed(sm.KindStep, models.StateComplete))
	fmt.Println(sm.Allowed(sm.KindTask, models.StateComplete))
	event, ok := sm.Event(sm.KindStep, models.StateError, models.StatePending)
	fmt.Println(event, ok)
	// Output:
	// [pending cancelled resolved_manually]
	// []
	// [cancelled]
	// retry_requested true
}
