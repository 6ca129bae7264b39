-- The quarantine's cap: at most a fixed number of rows per device and time window.
--
-- One gateway sending junk as fast as it can must not fill the disk. The ingest
-- workers keep the first refusals of each device and window (the sample, in
-- `quarantine`) and only count the rest here. `device_id` is '' for messages whose
-- topic names no device. Refusals of a window = kept + suppressed.
CREATE TABLE quarantine_windows (
    device_id     text NOT NULL,
    window_start  timestamptz NOT NULL,
    kept          integer NOT NULL DEFAULT 0,
    suppressed    bigint NOT NULL DEFAULT 0,
    last_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quarantine_windows_pkey PRIMARY KEY (device_id, window_start)
);
CREATE INDEX quarantine_windows_suppressed_idx ON quarantine_windows (window_start DESC)
    WHERE suppressed > 0;

-- Admit up to `wanted` more rows of a device's window, at most `cap` in all; count
-- the rest as suppressed. Answers how many are admitted. The row lock makes
-- workers that refuse messages of one device at once share the one cap.
CREATE FUNCTION quarantine_admit(device text, window_at timestamptz, wanted integer, cap integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    kept_before integer;
    admitted integer;
BEGIN
    INSERT INTO quarantine_windows (device_id, window_start) VALUES (device, window_at)
    ON CONFLICT DO NOTHING;
    SELECT w.kept INTO kept_before FROM quarantine_windows w
    WHERE w.device_id = device AND w.window_start = window_at FOR UPDATE;
    admitted := greatest(0, least(wanted, cap - kept_before));
    UPDATE quarantine_windows w
    SET kept = w.kept + admitted, suppressed = w.suppressed + (wanted - admitted), last_at = now()
    WHERE w.device_id = device AND w.window_start = window_at;
    RETURN admitted;
END
$$;
