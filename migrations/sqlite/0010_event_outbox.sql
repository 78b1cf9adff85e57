-- Registry and features: the transactional outbox. An event (version
-- registered, alias moved, data arrived) is inserted in the same transaction
-- as the change that causes it, and deleted by the process's drain task once
-- the event bus accepted it, oldest first: an event survives a bus outage and
-- a crash of the process that wrote it.
CREATE TABLE event_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,         -- the event's JSON (Event::to_json)
    created_at BIGINT NOT NULL
);
