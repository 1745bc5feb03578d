// PostGraphile 5 as make bench-peers runs it: the amber preset over the public schema, with
// smart tags that give the live views primary keys and foreign keys, so that a step reaches
// its readiness and DAG rows, and a task its execution context, the way tasker's schema does.
// DATABASE_URL and PEERS_PORT come from the environment.
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { makePgService } from "postgraphile/adaptors/pg";
import { jsonPgSmartTags } from "postgraphile/utils";

const tags = jsonPgSmartTags({
  version: 1,
  config: {
    class: {
      // Its default type name, TaskerWorkflowStepEdge, is the edge type of the steps' connection.
      tasker_workflow_step_edges: { tags: { name: "tasker_step_dependency" } },
      // Token hashes have no place in a benchmark's schema.
      tasker_api_tokens: { tags: { behavior: "-*" } },
      tasker_step_readiness_statuses: {
        tags: {
          primaryKey: "workflow_step_id",
          foreignKey:
            "(workflow_step_id) references tasker_workflow_steps (workflow_step_id)|@fieldName step|@foreignFieldName readiness",
        },
      },
      tasker_step_dag_relationships: {
        tags: {
          primaryKey: "workflow_step_id",
          foreignKey:
            "(workflow_step_id) references tasker_workflow_steps (workflow_step_id)|@fieldName step|@foreignFieldName dag",
        },
      },
      tasker_task_execution_contexts: {
        tags: {
          primaryKey: "task_id",
          foreignKey: "(task_id) references tasker_tasks (task_id)|@fieldName task|@foreignFieldName executionContext",
        },
      },
    },
  },
});

export default {
  extends: [PostGraphileAmberPreset],
  plugins: [tags],
  pgServices: [
    makePgService({ connectionString: process.env.DATABASE_URL, schemas: ["public"], poolConfig: { max: 20 } }),
  ],
  grafserv: { host: "127.0.0.1", port: Number(process.env.PEERS_PORT || 5678), graphiql: false },
  grafast: { explain: false },
};
