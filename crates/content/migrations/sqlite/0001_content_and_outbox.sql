-- The content table and the transactional outbox (SQLite).
-- `seq` orders rows (newest first in the API, oldest first in the relay);
-- `id` is the public identifier. Times are microseconds since the Unix epoch.

CREATE TABLE content (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    title         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    created_at_us INTEGER NOT NULL
);

CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at_us   INTEGER NOT NULL,
    delivered_at_us INTEGER
);

-- The relay only ever looks for undelivered rows, oldest first.
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at_us IS NULL;
