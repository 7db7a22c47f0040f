-- State several instances share (issue 18): the activity page's write
-- history, UI sessions ended by logout, and the login throttle's counters.
-- Portable SQL (SQLite and PostgreSQL); times in Unix milliseconds.
CREATE TABLE activity (
    at_ms BIGINT NOT NULL,
    account TEXT NOT NULL,
    action TEXT NOT NULL,
    repository TEXT NOT NULL,
    reference TEXT,
    digest TEXT,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX activity_at ON activity (at_ms);

CREATE TABLE ended_sessions (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL,
    blocked_until_ms BIGINT NOT NULL
);
