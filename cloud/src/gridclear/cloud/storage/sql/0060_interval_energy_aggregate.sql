-- On the TimescaleDB path, interval energy comes from the continuous aggregate.
--
-- Plain path (0011 made plain tables): nothing changes; the ingest workers keep
-- interval_energy up to date (cloud/intervals/maintain.py).
--
-- TimescaleDB path (readings is a hypertable):
--
-- * readings_15m is rebuilt with what interval energy needs, per meter, 15-minute bucket
--   and register: the first and last sample that has the register (time and value) and
--   its least and greatest value. It aggregates in real time (materialized_only =
--   false): buckets the refresh policy has not reached yet are computed from readings
--   at query time, so a query never sees stale energy for lack of a refresh.
-- * interval_energy_aggregate computes, from readings_15m alone, the energy of every
--   15-minute slot as gridclear.cloud.intervals.slot_energy does: the register at each
--   boundary, measured or interpolated (rounded down) between the samples around it,
--   never across a gap over 31 days; complete when every register reported around the
--   slot covers it with both boundaries within 5 minutes of a sample.
-- * What an aggregate cannot see is the order of the samples inside a bucket, so it
--   cannot tell every register reset (100, 200, 150, 250 has the same first, last, least
--   and greatest values as a steady count). The slots around a reset stay with the
--   workers: they write exactly those slots into interval_energy_resets, and the view
--   interval_energy takes their row over the aggregate's. The aggregate leaves out the
--   resets it does see (a fall between two buckets, or a bucket whose least or greatest
--   value is not its first or last), so it never shows a negative difference meanwhile.
-- * interval_energy becomes that view, with the same columns: the API and settlement
--   read it unchanged. Writing goes to interval_energy_resets (the worker only).

DO $aggregate$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'plain path: the workers keep interval_energy';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings') THEN
        RAISE NOTICE 'readings is a plain table: the workers keep interval_energy';
        RETURN;
    END IF;

    DROP MATERIALIZED VIEW readings_15m;  -- its refresh policy goes with it
    EXECUTE $cagg$
        CREATE MATERIALIZED VIEW readings_15m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT meter_id,
               time_bucket(INTERVAL '15 minutes', ts) AS bucket,
               count(*) AS samples,
               min(ts) FILTER (WHERE import_wh IS NOT NULL) AS import_first_ts,
               first(import_wh, ts) FILTER (WHERE import_wh IS NOT NULL) AS import_first_wh,
               max(ts) FILTER (WHERE import_wh IS NOT NULL) AS import_last_ts,
               last(import_wh, ts) FILTER (WHERE import_wh IS NOT NULL) AS import_last_wh,
               min(import_wh) AS import_min_wh,
               max(import_wh) AS import_max_wh,
               min(ts) FILTER (WHERE export_wh IS NOT NULL) AS export_first_ts,
               first(export_wh, ts) FILTER (WHERE export_wh IS NOT NULL) AS export_first_wh,
               max(ts) FILTER (WHERE export_wh IS NOT NULL) AS export_last_ts,
               last(export_wh, ts) FILTER (WHERE export_wh IS NOT NULL) AS export_last_wh,
               min(export_wh) AS export_min_wh,
               max(export_wh) AS export_max_wh,
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

    -- Every intermediate step is per meter and register (NOT MATERIALIZED, partitioned
    -- by meter), so that a query for some meters computes theirs alone.
    EXECUTE $view$
        CREATE VIEW interval_energy_aggregate AS
        WITH registers AS NOT MATERIALIZED (
            -- One row per meter, register and bucket that holds samples of it.
            SELECT c.meter_id, r.reg, c.bucket, r.first_ts, r.first_wh, r.last_ts,
                   r.last_wh, r.min_wh, r.max_wh
            FROM readings_15m c
            CROSS JOIN LATERAL (VALUES
                ('import', c.import_first_ts, c.import_first_wh, c.import_last_ts,
                 c.import_last_wh, c.import_min_wh, c.import_max_wh),
                ('export', c.export_first_ts, c.export_first_wh, c.export_last_ts,
                 c.export_last_wh, c.export_min_wh, c.export_max_wh)
            ) AS r (reg, first_ts, first_wh, last_ts, last_wh, min_wh, max_wh)
            WHERE r.first_ts IS NOT NULL
        ), linked AS NOT MATERIALIZED (
            -- Each bucket with the last sample before it; `linked` when the gap between
            -- them is one that boundaries are interpolated across at all.
            SELECT p.*,
                   p.prev_ts IS NOT NULL
                   AND p.first_ts - p.prev_ts <= INTERVAL '31 days' AS linked
            FROM (SELECT r.*,
                         lag(r.bucket) OVER w AS prev_bucket,
                         lag(r.last_ts) OVER w AS prev_ts,
                         lag(r.last_wh) OVER w AS prev_wh
                  FROM registers r
                  WINDOW w AS (PARTITION BY r.meter_id, r.reg ORDER BY r.bucket)) p
        ), boundary AS NOT MATERIALIZED (
            -- The register at every boundary after the previous bucket with samples, up
            -- to this bucket's start: measured at this bucket's first sample, else
            -- interpolated between the two samples around it (none across a reset).
            SELECT l.meter_id, l.reg, b.at,
                   CASE WHEN b.at = l.first_ts THEN l.first_wh
                        ELSE l.prev_wh + (l.first_wh - l.prev_wh)
                             * (ts_to_ms(b.at) - ts_to_ms(l.prev_ts))
                             / (ts_to_ms(l.first_ts) - ts_to_ms(l.prev_ts))
                   END AS wh,
                   b.at <> l.first_ts AS interpolated,
                   CASE WHEN b.at = l.first_ts THEN 0
                        ELSE ts_to_ms(l.first_ts) - ts_to_ms(l.prev_ts)
                   END AS gap_ms
            FROM linked l
            CROSS JOIN LATERAL generate_series(
                CASE WHEN l.linked THEN l.prev_bucket + INTERVAL '15 minutes' ELSE l.bucket END,
                l.bucket, INTERVAL '15 minutes') AS b (at)
            WHERE b.at = l.first_ts OR (l.linked AND l.first_wh >= l.prev_wh)
        ), facts AS (
            -- What each register says about a slot: its energy where it has a value at
            -- both boundaries (`tight`: each within 5 minutes of a sample); that it was
            -- reported around the slot (a value at a boundary, or samples inside); and,
            -- as the pseudo-register 'reset', that the slot overlaps a fall (the
            -- workers' slot, maintain.py).
            SELECT s.meter_id, s.reg, s.at AS slot_start, e.wh - s.wh AS wh,
                   s.interpolated OR e.interpolated AS interpolated,
                   greatest(s.gap_ms, e.gap_ms) <= 300000 AS tight
            FROM boundary s
            JOIN boundary e ON e.meter_id = s.meter_id AND e.reg = s.reg
                           AND e.at = s.at + INTERVAL '15 minutes'
            UNION ALL
            SELECT meter_id, reg, at, NULL, false, false FROM boundary
            UNION ALL
            SELECT meter_id, reg, at - INTERVAL '15 minutes', NULL, false, false FROM boundary
            UNION ALL
            SELECT meter_id, reg, bucket, NULL, false, false FROM registers
            UNION ALL
            SELECT meter_id, 'reset', bucket, NULL, false, false
            FROM linked WHERE min_wh < first_wh OR max_wh > last_wh
            UNION ALL
            SELECT l.meter_id, 'reset', s.slot_start, NULL, false, false
            FROM linked l
            CROSS JOIN LATERAL generate_series(
                l.prev_bucket,
                time_bucket(INTERVAL '15 minutes', l.first_ts - INTERVAL '1 millisecond'),
                INTERVAL '15 minutes') AS s (slot_start)
            WHERE l.linked AND l.first_wh < l.prev_wh
        ), per_register AS (
            SELECT meter_id, slot_start, reg, max(wh) AS wh,
                   bool_or(interpolated) AS interpolated, bool_or(tight) AS tight
            FROM facts
            GROUP BY meter_id, slot_start, reg
        )
        SELECT meter_id,
               slot_start,
               slot_start + INTERVAL '15 minutes' AS slot_end,
               max(wh) FILTER (WHERE reg = 'import') AS import_wh,
               max(wh) FILTER (WHERE reg = 'export') AS export_wh,
               bool_and(wh IS NOT NULL AND tight) AS complete,
               bool_or(interpolated) AS interpolated,
               false AS counter_reset,
               now() AS computed_at
        FROM per_register
        GROUP BY meter_id, slot_start
        HAVING bool_or(wh IS NOT NULL) AND NOT bool_or(reg = 'reset')
    $view$;

    -- The workers' table keeps the slots around resets only. What it held was computed
    -- for every slot; queue it for recomputation, so that the resets come back.
    ALTER TABLE interval_energy RENAME TO interval_energy_resets;
    ALTER TABLE interval_energy_resets
        RENAME CONSTRAINT interval_energy_pkey TO interval_energy_resets_pkey;
    INSERT INTO interval_dirty (meter_id, from_ts, to_ts, slots)
        SELECT meter_id, min(slot_start), max(slot_start), true
        FROM interval_energy_resets GROUP BY meter_id;
    DELETE FROM interval_energy_resets;

    EXECUTE $view$
        CREATE VIEW interval_energy AS
        SELECT meter_id, slot_start, slot_end, import_wh, export_wh, complete, interpolated,
               counter_reset, computed_at
        FROM interval_energy_resets
        UNION ALL
        SELECT a.meter_id, a.slot_start, a.slot_end, a.import_wh, a.export_wh, a.complete,
               a.interpolated, a.counter_reset, a.computed_at
        FROM interval_energy_aggregate a
        WHERE NOT EXISTS (SELECT 1 FROM interval_energy_resets w
                          WHERE w.meter_id = a.meter_id AND w.slot_start = a.slot_start)
    $view$;
END
$aggregate$;
