-- The sessions of one sessioncert deployment, shared by all its instances. A deployment
-- may have its own schema (`?schema=NAME` in the store address); every name here is
-- resolved through the connection's search_path.
--
-- Times and counts are bigint: u64 values above i64::MAX ("never") are stored as
-- i64::MAX, which means the same for every comparison the store makes. The replay
-- window's top is numeric(20) so every u64 sequence number is exact.
CREATE TABLE sessioncert_sessions (
    id              bytea   PRIMARY KEY CHECK (length(id) = 16),
    state           text    NOT NULL
                    CHECK (state IN ('matching', 'established', 'closed', 'expired')),
    version         integer NOT NULL,
    suite           text    NOT NULL,
    client_addr     text,
    created_at_ms   bigint  NOT NULL,
    last_used_at_ms bigint  NOT NULL,
    expires_at_ms   bigint  NOT NULL,
    idle_timeout_ms bigint  NOT NULL,
    request_count   bigint  NOT NULL,
    sealed_secrets  bytea   NOT NULL,
    ended_at_ms     bigint,
    -- PROTOCOL §9: highest accepted sequence number + 1 (0: none yet), and a ring of
    -- 1024 bits (get_bit/set_bit numbering), bit seq % 1024 set when seq was accepted.
    win_top         numeric(20, 0) NOT NULL DEFAULT 0,
    win_bits        bytea   NOT NULL DEFAULT decode(repeat('00', 128), 'hex')
                    CHECK (length(win_bits) = 128)
-- Room on each page, so that the per-request update (no indexed column changes) is a
-- HOT update.
) WITH (fillfactor = 70);

-- list: newest first.
CREATE INDEX sessioncert_sessions_created ON sessioncert_sessions (created_at_ms DESC, id DESC);
-- load_live, list(live_only), sweep.
CREATE INDEX sessioncert_sessions_live ON sessioncert_sessions (created_at_ms)
    WHERE state IN ('matching', 'established');
-- ended_since, load_ended, sweep's deletion.
CREATE INDEX sessioncert_sessions_ended ON sessioncert_sessions (ended_at_ms, id)
    WHERE ended_at_ms IS NOT NULL;

-- Small values the instances agree on (e.g. the ticket-key seed), sealed by the caller.
CREATE TABLE sessioncert_values (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);

-- check_request for a batch: shared::check_and_mark applied to each mark, in one
-- statement (one round trip, one commit). Each mark is decided on its row, locked, so
-- it is atomic and isolated; marks of one session apply in their order in the arrays.
-- seqs are u64 bit-cast to bigint. outcome: 0 accepted (detail: request count),
-- 1 replayed, 2 ended (detail: state), 3 unknown.
CREATE FUNCTION sessioncert_check(ids bytea[], seqs bigint[], nows bigint[], closes boolean[])
RETURNS TABLE (ord integer, outcome smallint, detail text)
LANGUAGE plpgsql AS $fn$
DECLARE
    i          integer;
    s          record;
    seq        numeric;
    top        numeric;
    ahead      numeric;
    bits       bytea;
    slot       integer;
    first_slot integer;
    now_ms     bigint;
BEGIN
    -- Rows are locked in id order (then arrival order), like every multi-row write of
    -- this store, so concurrent batches never deadlock.
    FOR i IN SELECT u.o FROM unnest(ids) WITH ORDINALITY AS u(id, o) ORDER BY u.id, u.o LOOP
        ord := i;
        detail := NULL;
        now_ms := nows[i];
        seq := seqs[i]::numeric;
        IF seq < 0 THEN
            seq := seq + 18446744073709551616;
        END IF;
        SELECT t.state, t.expires_at_ms, t.last_used_at_ms, t.idle_timeout_ms,
               t.win_top, t.win_bits
          INTO s
          FROM sessioncert_sessions t
         WHERE t.id = ids[i]
           FOR UPDATE;
        IF NOT FOUND THEN
            outcome := 3;
            RETURN NEXT;
            CONTINUE;
        END IF;
        top := s.win_top;
        bits := s.win_bits;
        slot := (seq % 1024)::integer;
        -- 1. Seen, or older than the window (checked first, so an ended session's
        --    refusal is only ever tagged for a number that never ran).
        IF seq = 18446744073709551615
           OR (seq < top AND (top - seq > 1024 OR get_bit(bits, slot) = 1)) THEN
            outcome := 1;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- 2. Ended.
        IF s.state NOT IN ('matching', 'established') THEN
            outcome := 2;
            detail := s.state;
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- 3. Lifetime or idle time ran out (last_used + idle <= now, without overflow).
        IF s.expires_at_ms <= now_ms OR s.idle_timeout_ms <= now_ms - s.last_used_at_ms THEN
            UPDATE sessioncert_sessions
               SET state = 'expired', ended_at_ms = now_ms, sealed_secrets = '\x'::bytea
             WHERE id = ids[i];
            outcome := 2;
            detail := 'expired';
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- 4. Mark, use, count, and close if asked.
        IF seq >= top THEN
            ahead := seq - top;
            IF ahead >= 1023 THEN
                bits := decode(repeat('00', 128), 'hex');
            ELSE
                -- Clear the slots of the numbers that slide into the window unseen.
                first_slot := (top % 1024)::integer;
                FOR k IN 0 .. ahead::integer LOOP
                    bits := set_bit(bits, (first_slot + k) % 1024, 0);
                END LOOP;
            END IF;
            top := seq + 1;
        END IF;
        bits := set_bit(bits, slot, 1);
        UPDATE sessioncert_sessions
           SET win_top = top,
               win_bits = bits,
               last_used_at_ms = GREATEST(last_used_at_ms, now_ms),
               request_count = request_count + 1,
               state = CASE WHEN closes[i] THEN 'closed' ELSE state END,
               ended_at_ms = CASE WHEN closes[i] THEN now_ms ELSE ended_at_ms END,
               sealed_secrets = CASE WHEN closes[i] THEN '\x'::bytea ELSE sealed_secrets END
         WHERE id = ids[i]
        RETURNING request_count::text INTO detail;
        outcome := 0;
        RETURN NEXT;
    END LOOP;
END
$fn$;
