-- Registry and features: the transactional outbox. An event (version
-- registered, alias moved, data arrived) is inserted in the same transaction
-- as the change that causes it, and deleted by a drain task once the event
-- bus accepted it, oldest first: an event survives a bus outage and a crash
-- of the process that wrote it. Replicas draining the same table lock the
-- rows they send (FOR UPDATE SKIP LOCKED), so no row is sent by two at once.
CREATE TABLE event_outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,         -- the event's JSON (Event::to_json)
    created_at BIGINT NOT NULL
);
