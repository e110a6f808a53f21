/* The store's schema, as numbered migrations. Only the store's backends include this.
 *
 * Migration N turns a version N-1 database into a version N one; version 0 is an empty
 * database. The numbering is shared by every backend: each row of the table below holds
 * the SQL of one version for every dialect, so "schema version 3" means the same tables
 * and columns whatever the database. The dialects differ only in spelling: BIGSERIAL for
 * SQLite's AUTOINCREMENT ids, BIGINT for times, BOOLEAN for the 0/1 integers, and the
 * PostgreSQL-only notification triggers (which change no table or column). Rules:
 *   - never edit a migration that has shipped; add a new one;
 *   - each runs in its own transaction, together with the row that records it;
 *   - a binary refuses a database whose version is newer than STORE__SCHEMA_VERSION,
 *     because it cannot know what the newer columns mean.
 *
 * The version table itself is not a migration: the runner creates
 * `schema_version(version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)` (BIGINT in
 * PostgreSQL) when missing, with one row per applied migration, so that MAX(version) is the
 * database's version. */
#ifndef CODEHUB_STORE_MIGRATIONS_H
#define CODEHUB_STORE_MIGRATIONS_H

struct store__migration {
    const char *summary;  /* one line, logged when the migration is applied */
    const char *sqlite;   /* statements separated by ';', run with sqlite3_exec() */
    const char *postgres; /* statements separated by ';', run with PQexec() */
};

/* Indexed by version; [0] stands for the empty database and has no SQL. */
static const struct store__migration store__migrations[] = {
    [0] = {"empty database", NULL, NULL},
    [1] =
        {
            "initial schema: meta, users, sessions, tokens, servers, events",
            /* AUTOINCREMENT on users and tokens: their ids appear in URLs, logs and
             * in-memory caches, and must never be handed to a new row after a delete
             * (SQLite would otherwise reuse the highest id once it is freed). */
            "CREATE TABLE meta (\n"
            "    key TEXT PRIMARY KEY NOT NULL,\n"
            "    value TEXT NOT NULL\n"
            ");\n"
            "CREATE TABLE users (\n"
            "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "    name TEXT NOT NULL UNIQUE,\n"
            "    password_hash TEXT,\n"
            "    admin INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),\n"
            "    created_ms INTEGER NOT NULL,\n"
            "    last_activity_ms INTEGER NOT NULL DEFAULT 0\n"
            ");\n"
            "CREATE TABLE sessions (\n"
            "    id_hash TEXT PRIMARY KEY NOT NULL,\n"
            "    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
            "    created_ms INTEGER NOT NULL,\n"
            "    expires_ms INTEGER NOT NULL,\n"
            "    last_seen_ms INTEGER NOT NULL,\n"
            "    client_addr TEXT NOT NULL DEFAULT ''\n"
            ");\n"
            "CREATE INDEX sessions_by_user ON sessions (user_id);\n"
            "CREATE INDEX sessions_by_expiry ON sessions (expires_ms);\n"
            "CREATE TABLE tokens (\n"
            "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
            "    hash TEXT NOT NULL UNIQUE,\n"
            "    prefix TEXT NOT NULL,\n"
            "    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
            "    scope TEXT NOT NULL CHECK (scope IN ('user', 'admin')),\n"
            "    note TEXT NOT NULL DEFAULT '',\n"
            "    created_ms INTEGER NOT NULL,\n"
            "    expires_ms INTEGER NOT NULL DEFAULT 0,\n"
            "    last_used_ms INTEGER NOT NULL DEFAULT 0\n"
            ");\n"
            "CREATE INDEX tokens_by_user ON tokens (user_id);\n"
            "CREATE INDEX tokens_by_expiry ON tokens (expires_ms);\n"
            "CREATE TABLE servers (\n"
            "    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,\n"
            "    state TEXT NOT NULL CHECK (state IN\n"
            "        ('stopped', 'starting', 'running', 'stopping', 'failed')),\n"
            "    url TEXT NOT NULL DEFAULT '',\n"
            "    spawner_state TEXT NOT NULL DEFAULT '{}',\n"
            "    message TEXT NOT NULL DEFAULT '',\n"
            "    started_ms INTEGER NOT NULL DEFAULT 0,\n"
            "    last_activity_ms INTEGER NOT NULL DEFAULT 0,\n"
            "    updated_ms INTEGER NOT NULL\n"
            ");\n"
            /* "user" is quoted because it is a reserved word in PostgreSQL; keeping the
             * same spelling in both dialects keeps the column name the same. */
            "CREATE TABLE events (\n"
            "    id INTEGER PRIMARY KEY,\n"
            "    ts_ms INTEGER NOT NULL,\n"
            "    kind TEXT NOT NULL,\n"
            "    \"user\" TEXT NOT NULL DEFAULT '',\n"
            "    actor TEXT NOT NULL DEFAULT '',\n"
            "    detail TEXT NOT NULL DEFAULT ''\n"
            ");\n"
            "CREATE INDEX events_by_ts ON events (ts_ms);\n",
            /* BIGSERIAL: sequences never hand out a value twice, like AUTOINCREMENT. */
            "CREATE TABLE meta (\n"
            "    key TEXT PRIMARY KEY NOT NULL,\n"
            "    value TEXT NOT NULL\n"
            ");\n"
            "CREATE TABLE users (\n"
            "    id BIGSERIAL PRIMARY KEY,\n"
            "    name TEXT NOT NULL UNIQUE,\n"
            "    password_hash TEXT,\n"
            "    admin BOOLEAN NOT NULL DEFAULT FALSE,\n"
            "    created_ms BIGINT NOT NULL,\n"
            "    last_activity_ms BIGINT NOT NULL DEFAULT 0\n"
            ");\n"
            "CREATE TABLE sessions (\n"
            "    id_hash TEXT PRIMARY KEY NOT NULL,\n"
            "    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
            "    created_ms BIGINT NOT NULL,\n"
            "    expires_ms BIGINT NOT NULL,\n"
            "    last_seen_ms BIGINT NOT NULL,\n"
            "    client_addr TEXT NOT NULL DEFAULT ''\n"
            ");\n"
            "CREATE INDEX sessions_by_user ON sessions (user_id);\n"
            "CREATE INDEX sessions_by_expiry ON sessions (expires_ms);\n"
            "CREATE TABLE tokens (\n"
            "    id BIGSERIAL PRIMARY KEY,\n"
            "    hash TEXT NOT NULL UNIQUE,\n"
            "    prefix TEXT NOT NULL,\n"
            "    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
            "    scope TEXT NOT NULL CHECK (scope IN ('user', 'admin')),\n"
            "    note TEXT NOT NULL DEFAULT '',\n"
            "    created_ms BIGINT NOT NULL,\n"
            "    expires_ms BIGINT NOT NULL DEFAULT 0,\n"
            "    last_used_ms BIGINT NOT NULL DEFAULT 0\n"
            ");\n"
            "CREATE INDEX tokens_by_user ON tokens (user_id);\n"
            "CREATE INDEX tokens_by_expiry ON tokens (expires_ms);\n"
            "CREATE TABLE servers (\n"
            "    user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,\n"
            "    state TEXT NOT NULL CHECK (state IN\n"
            "        ('stopped', 'starting', 'running', 'stopping', 'failed')),\n"
            "    url TEXT NOT NULL DEFAULT '',\n"
            "    spawner_state TEXT NOT NULL DEFAULT '{}',\n"
            "    message TEXT NOT NULL DEFAULT '',\n"
            "    started_ms BIGINT NOT NULL DEFAULT 0,\n"
            "    last_activity_ms BIGINT NOT NULL DEFAULT 0,\n"
            "    updated_ms BIGINT NOT NULL\n"
            ");\n"
            "CREATE TABLE events (\n"
            "    id BIGSERIAL PRIMARY KEY,\n"
            "    ts_ms BIGINT NOT NULL,\n"
            "    kind TEXT NOT NULL,\n"
            "    \"user\" TEXT NOT NULL DEFAULT '',\n"
            "    actor TEXT NOT NULL DEFAULT '',\n"
            "    detail TEXT NOT NULL DEFAULT ''\n"
            ");\n"
            "CREATE INDEX events_by_ts ON events (ts_ms);\n",
        },
    [2] =
        {
            "replicas: servers.owner, servers.stop_requested, the replicas table "
            "(and notification triggers in PostgreSQL)",
            "ALTER TABLE servers ADD COLUMN owner TEXT NOT NULL DEFAULT '';\n"
            "ALTER TABLE servers ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0\n"
            "    CHECK (stop_requested IN (0, 1));\n"
            "CREATE TABLE replicas (\n"
            "    id TEXT PRIMARY KEY NOT NULL,\n"
            "    address TEXT NOT NULL DEFAULT '',\n"
            "    started_ms INTEGER NOT NULL,\n"
            "    heartbeat_ms INTEGER NOT NULL\n"
            ");\n",
            "ALTER TABLE servers ADD COLUMN owner TEXT NOT NULL DEFAULT '';\n"
            "ALTER TABLE servers ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT FALSE;\n"
            "CREATE TABLE replicas (\n"
            "    id TEXT PRIMARY KEY NOT NULL,\n"
            "    address TEXT NOT NULL DEFAULT '',\n"
            "    started_ms BIGINT NOT NULL,\n"
            "    heartbeat_ms BIGINT NOT NULL\n"
            ");\n"
            /* Every process LISTENs on channel 'codehub' (src/store/pg_listen.c) and hears
             * the rows that others change, the offline CLI included; the payloads are the
             * contract documented in store.h. pg_notify() is delivered at commit, and not
             * at all on rollback. Replica heartbeats and activity touches (users'
             * last_activity_ms, sessions' last_seen_ms, tokens' last_used_ms) must stay
             * silent: they are frequent and change nothing anyone caches. */
            "CREATE FUNCTION codehub_notify_server() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "    IF TG_OP = 'DELETE' THEN\n"
            "        PERFORM pg_notify('codehub', 'server ' || OLD.user_id);\n"
            "    ELSE\n"
            "        PERFORM pg_notify('codehub', 'server ' || NEW.user_id);\n"
            "    END IF;\n"
            "    RETURN NULL;\n"
            "END $$;\n"
            "CREATE TRIGGER servers_notify AFTER INSERT OR UPDATE OR DELETE ON servers\n"
            "    FOR EACH ROW EXECUTE FUNCTION codehub_notify_server();\n"
            "CREATE FUNCTION codehub_notify_user() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "    IF TG_OP = 'DELETE' THEN\n"
            "        PERFORM pg_notify('codehub', 'user ' || OLD.id);\n"
            "    ELSE\n"
            "        PERFORM pg_notify('codehub', 'user ' || NEW.id);\n"
            "    END IF;\n"
            "    RETURN NULL;\n"
            "END $$;\n"
            /* UPDATE OF fires when the column is named in the SET list, even with the same
             * value; the WHEN clause keeps a no-op update silent. */
            "CREATE TRIGGER users_notify_update AFTER UPDATE OF password_hash, admin ON users\n"
            "    FOR EACH ROW WHEN (OLD.password_hash IS DISTINCT FROM NEW.password_hash\n"
            "                       OR OLD.admin IS DISTINCT FROM NEW.admin)\n"
            "    EXECUTE FUNCTION codehub_notify_user();\n"
            "CREATE TRIGGER users_notify_delete AFTER DELETE ON users\n"
            "    FOR EACH ROW EXECUTE FUNCTION codehub_notify_user();\n"
            "CREATE FUNCTION codehub_notify_session() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "    PERFORM pg_notify('codehub', 'session ' || OLD.id_hash);\n"
            "    RETURN NULL;\n"
            "END $$;\n"
            "CREATE TRIGGER sessions_notify_delete AFTER DELETE ON sessions\n"
            "    FOR EACH ROW EXECUTE FUNCTION codehub_notify_session();\n"
            "CREATE FUNCTION codehub_notify_token() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "    PERFORM pg_notify('codehub', 'token ' || OLD.hash);\n"
            "    RETURN NULL;\n"
            "END $$;\n"
            "CREATE TRIGGER tokens_notify_delete AFTER DELETE ON tokens\n"
            "    FOR EACH ROW EXECUTE FUNCTION codehub_notify_token();\n",
        },
};

/* The version this binary brings a database to: the number of the last migration. */
#define STORE__SCHEMA_VERSION ((int)(sizeof store__migrations / sizeof store__migrations[0]) - 1)

#endif
