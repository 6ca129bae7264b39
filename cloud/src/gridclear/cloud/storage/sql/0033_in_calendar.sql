-- in_calendar(t): t itself, or the nearest time every client library can represent.
--
-- Python's datetime (psycopg's, so the API's and the ingest worker's) spans years
-- 1 to 9999 in the reading session's time zone; PostgreSQL's timestamptz spans
-- 4713 BC to 294276 AD and 'infinity'. A stored value outside Python's range (one
-- written before the API bounded its inputs, or by hand) would make every query
-- that returns it fail. Queries returning client-supplied times wrap them in this,
-- so one such row is shown a day inside the calendar rather than breaking a listing.
-- NULL stays NULL.
CREATE FUNCTION in_calendar(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN t < timestamptz '0001-01-02 00:00:00+00' THEN timestamptz '0001-01-02 00:00:00+00'
        WHEN t > timestamptz '9999-12-30 00:00:00+00' THEN timestamptz '9999-12-30 00:00:00+00'
        ELSE t
    END
$$;
