-- The car system's primary table (seed 003): one row per registered car.
-- Every change bumps version; the change's event (CarCreated, CarUpdated,
-- CarDeleted) carries it, so the search index keeps only the newest state.

CREATE TABLE IF NOT EXISTS cars (
    id          uuid        PRIMARY KEY,
    vin         text        NOT NULL UNIQUE CHECK (vin ~ '^[A-HJ-NPR-Z0-9]{17}$'),
    make        text        NOT NULL CHECK (make <> ''),
    model       text        NOT NULL CHECK (model <> ''),
    year        integer     NOT NULL CHECK (year BETWEEN 1886 AND 2100),
    price       bigint      NOT NULL CHECK (price > 0),            -- minor units (cents)
    version     bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
