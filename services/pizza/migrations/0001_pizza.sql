-- The pizza pipeline (seed 004). pizza-api writes an order and its event
-- (in pizza_order_outbox, created by outbox_migrate_table before this runs)
-- in one transaction; pizza-job moves the order through payment and
-- delivery and publishes it; pizza-consumer records each order it logged.

CREATE TABLE IF NOT EXISTS pizza_orders (
    id                uuid          PRIMARY KEY,
    flavor            text          NOT NULL CHECK (flavor <> ''),
    size              text          NOT NULL CHECK (size <> ''),
    quantity          integer       NOT NULL CHECK (quantity > 0),
    price             numeric(10,2) NOT NULL CHECK (price >= 0),
    address           text          NOT NULL CHECK (address <> ''),
    user_name         text          NOT NULL CHECK (user_name <> ''),
    -- pending -> paid -> delivered -> completed (published to pizza-orders)
    status            text          NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'paid', 'delivered', 'completed')),
    payment_attempts  integer       NOT NULL DEFAULT 0,
    delivery_attempts integer       NOT NULL DEFAULT 0,
    last_error        text,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    updated_at        timestamptz   NOT NULL DEFAULT now(),
    paid_at           timestamptz,
    delivered_at      timestamptz,
    completed_at      timestamptz
);
CREATE INDEX IF NOT EXISTS pizza_orders_status ON pizza_orders (status, created_at);

-- pizza-consumer's effect: one row per order event it logged (with its
-- inbox record in the same transaction).
CREATE TABLE IF NOT EXISTS pizza_received (
    event_id    uuid        PRIMARY KEY,
    order_id    uuid        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox rows with the seed's status words: the relay's ack_mode=mark
-- writes 'processed'; the seed calls that 'completed'.
CREATE OR REPLACE VIEW pizza_order_events AS
SELECT seq, id AS event_id, key AS order_id, type, topic,
       CASE status WHEN 'processed' THEN 'completed' ELSE status END AS status,
       attempts, last_error, created_at, processed_at AS completed_at
  FROM pizza_order_outbox;
