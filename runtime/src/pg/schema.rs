//! The ledger's tables, created and upgraded by versioned migrations.
//!
//! Every migration runs in one transaction under a transaction-scoped
//! advisory lock, so two governors starting at once on an empty database
//! serialize: the second finds the first's versions applied and does
//! nothing. A database migrated by a newer governor (a version this one
//! does not know) is refused rather than written with the wrong schema.

use postgres::Client;

/// Key of the advisory lock migrations run under (any fixed number: it only
/// has to be the same for every governor; "ggen-mig" in ASCII).
const MIGRATION_LOCK: i64 = 0x6767_656e_2d6d_6967;

/// (version, description, SQL), in order. Never edit a released entry: add one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "receipts, chain heads and the checkpoint",
        "
    -- Every receipt in append order (`position`, from 1, gapless); the
    -- stored `hash` is SHA-256(prev hash || bytes), `bytes` the canonical
    -- receipt exactly as hashed.
    CREATE TABLE ggen_receipts (
        position bigint PRIMARY KEY CHECK (position > 0),
        tenant   text   NOT NULL,
        seq      bigint NOT NULL CHECK (seq > 0),
        hash     bytea  NOT NULL CHECK (length(hash) = 32),
        bytes    bytea  NOT NULL,
        UNIQUE (tenant, seq)
    );
    -- Each tenant's last receipt, written in the same statement as the
    -- receipts, so opening the ledger reads one row per tenant.
    CREATE TABLE ggen_heads (
        tenant   text   PRIMARY KEY,
        seq      bigint NOT NULL,
        hash     bytea  NOT NULL,
        position bigint NOT NULL
    );
    -- The latest registry snapshot and the number of receipts before it.
    CREATE TABLE ggen_checkpoint (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        records   bigint  NOT NULL CHECK (records >= 0),
        blob      bytea   NOT NULL
    );
    ",
    ),
    (
        2,
        "the mark of an unfinished ledger copy",
        "
    -- Present while `ledger copy` fills the schema: a ledger holding it is
    -- an unfinished copy, which a start refuses and verify reports.
    CREATE TABLE ggen_copy_in_progress (
        singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
        source     text        NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now()
    );
    ",
    ),
    (
        3,
        "replicas sharing the schema: tenant states, timers, event ids, the receipt count",
        "
    -- Each tenant's registry state as of receipt `state_seq` (written with
    -- its receipts by replicas sharing the schema), when its next timer is
    -- due (ms since the epoch) and until when a replica claimed it.
    ALTER TABLE ggen_heads
        ADD COLUMN state         bytea,
        ADD COLUMN state_seq     bigint,
        ADD COLUMN due_at        bigint,
        ADD COLUMN claimed_until bigint;
    CREATE INDEX ggen_heads_due ON ggen_heads (due_at) WHERE due_at IS NOT NULL;
    -- Event ids inside the dedupe window, per tenant: a replica's decision
    -- carrying one already here is refused as a duplicate.
    CREATE TABLE ggen_event_ids (
        tenant text   NOT NULL,
        key    bytea  NOT NULL CHECK (length(key) = 16),
        at     bigint NOT NULL,
        PRIMARY KEY (tenant, key)
    );
    CREATE INDEX ggen_event_ids_at ON ggen_event_ids (at);
    -- The number of receipts: replicas take positions from it under its
    -- row lock, so positions stay gapless and commit in order.
    CREATE TABLE ggen_log (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        records   bigint  NOT NULL CHECK (records >= 0)
    );
    INSERT INTO ggen_log (records) SELECT coalesce(max(position), 0) FROM ggen_receipts;
    ",
    ),
    (
        4,
        "receipts in partitions by position, archived ones recorded, the anchor",
        "
    -- The receipts become a table partitioned by position ranges (each
    -- partition a run of the log, as a segment is in a file ledger), so
    -- retention drops whole partitions instead of deleting rows. The
    -- receipts so far stay where they are: their table becomes partition 1.
    ALTER TABLE ggen_receipts RENAME TO ggen_receipts_0000000001;
    ALTER TABLE ggen_receipts_0000000001
        RENAME CONSTRAINT ggen_receipts_pkey TO ggen_receipts_0000000001_pkey;
    ALTER TABLE ggen_receipts_0000000001
        RENAME CONSTRAINT ggen_receipts_tenant_seq_key TO ggen_receipts_0000000001_tenant_seq_key;
    CREATE TABLE ggen_receipts (
        position bigint NOT NULL CHECK (position > 0),
        tenant   text   NOT NULL,
        seq      bigint NOT NULL CHECK (seq > 0),
        hash     bytea  NOT NULL CHECK (length(hash) = 32),
        bytes    bytea  NOT NULL,
        PRIMARY KEY (position)
    ) PARTITION BY RANGE (position);
    -- Every partition ever made: positions `first` to `next - 1`; `full_since`
    -- is when a retention round first saw it full, `archived` the SHA-256
    -- of its archived copy once that copy was verified (the partition is
    -- then dropped: the row stays, naming the archive's objects in order).
    CREATE TABLE ggen_partitions (
        id         integer     PRIMARY KEY CHECK (id > 0),
        first      bigint      NOT NULL CHECK (first > 0),
        next       bigint      NOT NULL,
        full_since timestamptz,
        archived   bytea       CHECK (length(archived) = 32),
        CHECK (next > first)
    );
    -- Where the local log starts once partitions were archived: the first
    -- local partition and the receipts before it, and every tenant's head
    -- there (its last archived receipt), from which the local chains verify.
    CREATE TABLE ggen_anchor (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        partition integer NOT NULL CHECK (partition > 1),
        records   bigint  NOT NULL CHECK (records > 0)
    );
    CREATE TABLE ggen_anchor_heads (
        tenant text   PRIMARY KEY,
        seq    bigint NOT NULL CHECK (seq > 0),
        hash   bytea  NOT NULL CHECK (length(hash) = 32)
    );
    DO $$
    DECLARE last bigint;
    BEGIN
        SELECT max(position) INTO last FROM ggen_receipts_0000000001;
        IF last IS NULL THEN
            DROP TABLE ggen_receipts_0000000001;
        ELSE
            EXECUTE format(
                'ALTER TABLE ggen_receipts ATTACH PARTITION ggen_receipts_0000000001 FOR VALUES FROM (1) TO (%s)',
                last + 1);
            INSERT INTO ggen_partitions (id, first, next) VALUES (1, 1, last + 1);
        END IF;
    END $$;
    ",
    ),
    (
        5,
        "the Merkle tree over the receipts",
        "
    -- The RFC 9162 tree of the receipts in position order (leaf index =
    -- position - 1): the hash of every perfect subtree of 2^level leaves,
    -- by level and index, and the number of leaves it holds. Derived from
    -- the receipts, extended by whichever governor needs it (under an
    -- advisory lock); kept when partitions are archived.
    CREATE TABLE ggen_tree (
        level smallint NOT NULL CHECK (level >= 0 AND level < 64),
        idx   bigint   NOT NULL CHECK (idx >= 0),
        hash  bytea    NOT NULL CHECK (length(hash) = 32),
        PRIMARY KEY (level, idx)
    );
    CREATE TABLE ggen_tree_size (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        size      bigint  NOT NULL CHECK (size >= 0)
    );
    ",
    ),
    (
        6,
        "action turns: the latest dispatch of each tenant's action each way round",
        "
    -- The seq of the latest decision whose dispatch of `action` (an undo,
    -- or not) took its turn: a dispatch whose counterpart decided later is
    -- here makes no attempt, so an action and its undo decided on
    -- different replicas never overtake each other.
    CREATE TABLE ggen_action_turns (
        tenant text    NOT NULL,
        action text    NOT NULL,
        undo   boolean NOT NULL,
        seq    bigint  NOT NULL CHECK (seq > 0),
        PRIMARY KEY (tenant, action, undo)
    );
    ",
    ),
    (
        7,
        "the number of tenants with a chain, for max_tenants across replicas",
        "
    -- How many tenants have a chain (rows of ggen_heads), kept by
    -- triggers whoever changes the rows. A replica about to start a
    -- tenant's chain reads it under the receipt counter's row lock (which
    -- every statement inserting heads holds until its commit), so the
    -- SKU's max_tenants bounds the tenants of all replicas together.
    -- Replicas' sessions (ggen.counts_tenants set) add the tenants they
    -- start in the statement that starts them: one update per statement,
    -- where the row trigger makes one per tenant, each slower than the
    -- last within a transaction.
    CREATE TABLE ggen_tenant_count (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        tenants   bigint  NOT NULL CHECK (tenants >= 0)
    );
    CREATE FUNCTION ggen_count_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            EXECUTE format('UPDATE %I.ggen_tenant_count SET tenants = 0', TG_TABLE_SCHEMA);
        ELSE
            EXECUTE format('UPDATE %I.ggen_tenant_count SET tenants = tenants + $1', TG_TABLE_SCHEMA)
                USING CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER ggen_heads_counted AFTER INSERT OR DELETE ON ggen_heads
        FOR EACH ROW
        WHEN (current_setting('ggen.counts_tenants', true) IS DISTINCT FROM 'on')
        EXECUTE FUNCTION ggen_count_tenants();
    CREATE TRIGGER ggen_heads_emptied AFTER TRUNCATE ON ggen_heads
        FOR EACH STATEMENT EXECUTE FUNCTION ggen_count_tenants();
    -- Counted once the trigger is in place: creating it waited for the
    -- transactions inserting heads, and holds off new ones until commit.
    INSERT INTO ggen_tenant_count (tenants) SELECT count(*) FROM ggen_heads;
    ",
    ),
    (
        8,
        "how long an attempt that took its action's turn may last",
        "
    -- Until when (microseconds since the epoch, by the database's clock)
    -- an attempt of the row's action that took its turn may be under way:
    -- set when the turn is taken, cleared once the attempt ended. A
    -- counterpart's turn is not taken while it lies ahead, so an attempt
    -- whose holder vanished before giving the turn back (its session lost
    -- to a database restart, its process killed) is still waited for.
    ALTER TABLE ggen_action_turns ADD COLUMN attempt_until bigint;
    ",
    ),
];

/// The newest schema version this build knows.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    /// A query failed.
    #[error("{what}")]
    Query {
        what: &'static str,
        #[source]
        source: postgres::Error,
    },
    /// The database was migrated by a newer governor.
    #[error(
        "the ledger schema is at version {found}, newer than this governor knows ({LATEST}): run a governor built by a newer ggen"
    )]
    Newer { found: i32 },
}

fn query(what: &'static str) -> impl FnOnce(postgres::Error) -> SchemaError {
    move |source| SchemaError::Query { what, source }
}

/// Brings the schema in the connection's `search_path` to [`LATEST`];
/// returns the versions it applied (none when it was current).
pub(crate) fn migrate(client: &mut Client) -> Result<Vec<i32>, SchemaError> {
    // Read committed whatever the server's default: a migration's later
    // statements see what committed while its earlier ones waited (7
    // counts the heads once its trigger's lock waited out their writers).
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::ReadCommitted)
        .start()
        .map_err(query("starting the migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(query("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ggen_schema_migrations (
            version     integer     PRIMARY KEY,
            description text        NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )",
    )
    .map_err(query("creating the migrations table"))?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM ggen_schema_migrations",
            &[],
        )
        .map_err(query("reading the schema version"))?
        .get(0);
    if found > LATEST {
        return Err(SchemaError::Newer { found });
    }
    let mut applied = Vec::new();
    for &(version, description, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > found) {
        tx.batch_execute(sql)
            .map_err(query("applying a schema migration"))?;
        tx.execute(
            "INSERT INTO ggen_schema_migrations (version, description) VALUES ($1, $2)",
            &[&version, &description],
        )
        .map_err(query("recording a schema migration"))?;
        applied.push(version);
    }
    tx.commit().map_err(query("committing the migrations"))?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, (version, ..)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
    }
}
