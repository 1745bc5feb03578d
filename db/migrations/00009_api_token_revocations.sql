-- +goose Up
-- Publishes every revocation (or deletion) of an API token on tasker_api_tokens_revoked with
-- payload {"id": api_token_id}, so that every server process closes the websocket connections
-- of that token at once, whichever process revoked it (internal/auth). Like the other
-- channels it is only a wake-up: the process re-reads the token's row before acting.

-- +goose StatementBegin
CREATE FUNCTION tasker_notify_api_token_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasker_api_tokens_revoked', json_build_object('id', OLD.api_token_id)::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_api_tokens_revoked_notify
    AFTER UPDATE OF revoked_at ON tasker_api_tokens
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION tasker_notify_api_token_revoked();

CREATE TRIGGER tasker_api_tokens_deleted_notify
    AFTER DELETE ON tasker_api_tokens
    FOR EACH ROW EXECUTE FUNCTION tasker_notify_api_token_revoked();

-- +goose Down
DROP TRIGGER tasker_api_tokens_deleted_notify ON tasker_api_tokens;
DROP TRIGGER tasker_api_tokens_revoked_notify ON tasker_api_tokens;
DROP FUNCTION tasker_notify_api_token_revoked();
