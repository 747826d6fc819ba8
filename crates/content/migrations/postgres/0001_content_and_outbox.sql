-- The content table and the transactional outbox (PostgreSQL).
-- `seq` orders rows (newest first in the API, oldest first in the relay);
-- `id` is the public identifier. Times are microseconds since the Unix epoch,
-- as in the SQLite schema, so both backends share every query.

CREATE TABLE content (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT   NOT NULL UNIQUE,
    title         TEXT   NOT NULL,
    body          TEXT   NOT NULL,
    created_at_us BIGINT NOT NULL
);

CREATE TABLE outbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT   NOT NULL UNIQUE,
    event_type      TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    created_at_us   BIGINT NOT NULL,
    delivered_at_us BIGINT
);

-- The relay only ever looks for undelivered rows, oldest first.
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at_us IS NULL;
