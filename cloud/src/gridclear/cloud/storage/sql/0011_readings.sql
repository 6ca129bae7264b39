-- Readings, the raw signed messages they came in, quarantine, interval energy.
--
-- Plain PostgreSQL: ordinary tables. With the timescaledb extension available, the
-- block at the end turns readings and raw_messages into hypertables with compression
-- and retention policies and adds a continuous aggregate of the samples at every
-- 15-minute bucket. The service's queries are the same either way.
--
-- The setting gridclear.storage chooses on purpose (server, database or session):
-- 'plain' takes the plain path even where TimescaleDB is installed, 'timescaledb'
-- refuses to go on without it, unset (or 'auto') takes TimescaleDB when the server
-- offers it. A server that has TimescaleDB installed but not preloaded is refused with
-- a hint rather than sent into CREATE EXTENSION, which would end the session (FATAL).
-- (This block once went straight to CREATE EXTENSION; the migrator accepts that
-- text's checksum too, since it only differs where it failed.)

-- UTC milliseconds since the epoch (the protocol's time) to and from timestamptz.
CREATE FUNCTION ms_to_ts(ms bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN timestamptz 'epoch' + ms * interval '1 millisecond';
CREATE FUNCTION ts_to_ms(ts timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN floor(extract(epoch FROM ts) * 1000)::bigint;

-- Every accepted signed message, byte for byte (the JWS as received): anyone holding
-- the device keys can verify it again. `chain` is what the hash chain says about the
-- message: 'first' (seq 1, no predecessor), 'ok' (prev is the stored predecessor's
-- digest), 'gap' (the predecessor has not arrived, yet or ever), 'broken' (the stored
-- predecessor's digest is not prev).
CREATE TABLE raw_messages (
    device_pk      bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    seq            bigint NOT NULL CHECK (seq >= 1),
    signed_at      timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    kid            text NOT NULL,
    digest         bytea NOT NULL CHECK (length(digest) = 32),
    prev           bytea CHECK (length(prev) = 32),
    chain          text NOT NULL CHECK (chain IN ('first', 'ok', 'gap', 'broken')),
    clock_synced   boolean NOT NULL,
    thinned        integer NOT NULL DEFAULT 0,
    reading_count  integer NOT NULL,
    token          bytea NOT NULL,
    CONSTRAINT raw_messages_pkey PRIMARY KEY (device_pk, seq)
);
CREATE INDEX raw_messages_device_received_idx ON raw_messages (device_pk, received_at DESC);
CREATE INDEX raw_messages_chain_idx ON raw_messages (device_pk, seq) WHERE chain IN ('gap', 'broken');

-- One sample per meter and time. Energy registers are cumulative Wh; quality is a
-- bit set (1 estimated, 2 counter_reset, 4 read_error, 8 clock_unsynced). (device_pk,
-- seq) names the signed message the sample came in. No foreign key on meter_id: the
-- writer creates the meter before its samples in the same transaction, and a check per
-- row would cost a tenth of the ingest rate; meters are never deleted while they have
-- samples.
CREATE TABLE readings (
    meter_id      bigint NOT NULL,
    ts            timestamptz NOT NULL,
    import_wh     bigint,
    export_wh     bigint,
    power_w       bigint,
    voltage_l1    real,
    voltage_l2    real,
    voltage_l3    real,
    current_l1    real,
    current_l2    real,
    current_l3    real,
    frequency_hz  real,
    quality       smallint NOT NULL DEFAULT 0,
    device_pk     bigint NOT NULL,
    seq           bigint NOT NULL,
    CONSTRAINT readings_pkey PRIMARY KEY (meter_id, ts)
);

-- Every refused message: why, where it came from, and a bounded copy of its bytes.
CREATE TABLE quarantine (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    topic        text NOT NULL,
    device_id    text,
    kid          text,
    seq          bigint,
    size         integer NOT NULL,
    body         bytea NOT NULL
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at DESC);
CREATE INDEX quarantine_reason_received_idx ON quarantine (reason, received_at DESC);

-- Energy per meter and delivery slot, from the cumulative registers at the slot's
-- boundaries (interpolated between the samples around each boundary). `complete` is
-- true when both boundaries are measured or interpolated over a short gap and the
-- register was not reset inside the slot. Maintained by the ingest workers.
CREATE TABLE interval_energy (
    meter_id        bigint NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    slot_start      timestamptz NOT NULL,
    slot_end        timestamptz NOT NULL,
    import_wh       bigint,
    export_wh       bigint,
    complete        boolean NOT NULL,
    interpolated    boolean NOT NULL,
    counter_reset   boolean NOT NULL,
    computed_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT interval_energy_pkey PRIMARY KEY (meter_id, slot_start)
);

-- Time ranges of new samples whose intervals must be (re)computed: written in the
-- same transaction as the samples, consumed by the interval maintenance.
CREATE TABLE interval_dirty (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id  bigint NOT NULL REFERENCES meters (id) ON DELETE CASCADE,
    from_ts   timestamptz NOT NULL,
    to_ts     timestamptz NOT NULL
);

-- ---------------------------------------------------------------- TimescaleDB path
DO $timescale$
DECLARE
    wanted text := coalesce(nullif(current_setting('gridclear.storage', true), ''), 'auto');
    preloaded boolean;
BEGIN
    IF wanted NOT IN ('auto', 'plain', 'timescaledb') THEN
        RAISE EXCEPTION 'gridclear.storage is %, not auto, plain or timescaledb', wanted;
    END IF;
    IF wanted = 'plain' THEN
        RAISE NOTICE 'gridclear.storage = plain: plain tables';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        IF wanted = 'timescaledb' THEN
            RAISE EXCEPTION 'gridclear.storage = timescaledb, but TimescaleDB is not installed on this server';
        END IF;
        RAISE NOTICE 'timescaledb is not available: plain tables';
        RETURN;
    END IF;
    BEGIN
        preloaded := current_setting('shared_preload_libraries')
                     ~ '(^|[\s,"/])timescaledb([\s,"]|$)';
    EXCEPTION WHEN insufficient_privilege THEN
        -- Not ours to read: the loader's own setting exists only when it was preloaded.
        preloaded := current_setting('timescaledb.max_background_workers', true) IS NOT NULL;
    END;
    IF NOT preloaded THEN
        RAISE EXCEPTION 'TimescaleDB is installed on this server but not preloaded'
            USING HINT = 'add shared_preload_libraries = ''timescaledb'' to postgresql.conf and'
                ' restart the server, or take the plain path on purpose:'
                ' gridclear-cloud migrate --storage plain';
    END IF;
    CREATE EXTENSION IF NOT EXISTS timescaledb;

    -- A hypertable's unique keys must hold its time column. A replay has the same
    -- signed_at, so (device, seq, signed_at) still refuses it; a different message
    -- reusing a seq is caught by the worker's digest check (docs/INGEST.md).
    ALTER TABLE raw_messages DROP CONSTRAINT raw_messages_pkey;
    ALTER TABLE raw_messages ADD CONSTRAINT raw_messages_pkey
        UNIQUE (device_pk, seq, signed_at);
    CREATE INDEX raw_messages_device_seq_idx ON raw_messages (device_pk, seq);
    PERFORM create_hypertable('raw_messages', 'signed_at',
                              chunk_time_interval => INTERVAL '7 days');
    PERFORM create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');

    ALTER TABLE readings SET (timescaledb.compress,
                              timescaledb.compress_segmentby = 'meter_id',
                              timescaledb.compress_orderby = 'ts');
    ALTER TABLE raw_messages SET (timescaledb.compress,
                                  timescaledb.compress_segmentby = 'device_pk',
                                  timescaledb.compress_orderby = 'seq');
    PERFORM add_compression_policy('readings', INTERVAL '7 days');
    PERFORM add_compression_policy('raw_messages', INTERVAL '7 days');
    -- Samples are kept two years; the signed messages, the audit trail of every
    -- settled kWh, seven. Operators change these with alter_job.
    PERFORM add_retention_policy('readings', INTERVAL '2 years');
    PERFORM add_retention_policy('raw_messages', INTERVAL '7 years');

    -- The first and last sample of every meter in every 15-minute bucket: the
    -- boundary samples interval energy is interpolated from, kept after retention.
    EXECUTE $cagg$
        CREATE MATERIALIZED VIEW readings_15m WITH (timescaledb.continuous) AS
        SELECT meter_id,
               time_bucket(INTERVAL '15 minutes', ts) AS bucket,
               count(*) AS samples,
               first(ts, ts) AS first_ts,
               last(ts, ts) AS last_ts,
               first(import_wh, ts) AS first_import_wh,
               last(import_wh, ts) AS last_import_wh,
               first(export_wh, ts) AS first_export_wh,
               last(export_wh, ts) AS last_export_wh,
               min(power_w) AS min_power_w,
               max(power_w) AS max_power_w
        FROM readings
        GROUP BY meter_id, bucket
        WITH NO DATA
    $cagg$;
    PERFORM add_continuous_aggregate_policy('readings_15m',
        start_offset => INTERVAL '30 days',
        end_offset => INTERVAL '15 minutes',
        schedule_interval => INTERVAL '5 minutes');
END
$timescale$;
