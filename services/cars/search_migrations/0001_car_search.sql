-- The search projection (its own database): the newest known state of each
-- car, written only by the car-search consumer from the cars events.
--
-- version  the newest event version applied; an event with a version not
--          above it is stale and ignored (duplicates, reordering).
-- deleted  a tombstone: the car was deleted at `version`; the row stays so
--          a late CarUpdated (lower version) cannot bring the car back.
CREATE TABLE IF NOT EXISTS car_search (
    car_id          uuid        PRIMARY KEY,
    version         bigint      NOT NULL,
    deleted         boolean     NOT NULL DEFAULT false,
    schema_version  integer     NOT NULL,
    vin             text,
    make            text,
    model           text,
    year            integer,
    price           bigint,
    event_id        uuid        NOT NULL,   -- the event that wrote this state
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    document        tsvector    GENERATED ALWAYS AS (
                        to_tsvector('simple', coalesce(vin, '') || ' ' || coalesce(make, '') || ' '
                                    || coalesce(model, '') || ' ' || coalesce(year::text, ''))
                    ) STORED
);
CREATE INDEX IF NOT EXISTS car_search_document ON car_search USING gin (document)
    WHERE NOT deleted;
