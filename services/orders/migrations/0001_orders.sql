-- The order system: orders, their items, the inventory they draw on and
-- the reservations that record each deduction once per order and sku.

CREATE TABLE IF NOT EXISTS orders (
    id          uuid        PRIMARY KEY,
    user_id     text        NOT NULL CHECK (user_id <> ''),
    amount      bigint      NOT NULL CHECK (amount > 0),       -- minor units (cents)
    status      text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason      text,                                          -- why it was rejected
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_user ON orders (user_id, created_at);

CREATE TABLE IF NOT EXISTS order_items (
    order_id    uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    sku         text        NOT NULL,
    quantity    integer     NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

CREATE TABLE IF NOT EXISTS inventory (
    sku         text        PRIMARY KEY,
    name        text        NOT NULL,
    stock       integer     NOT NULL CHECK (stock >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per order and sku whose stock was deducted: the effect, recorded.
CREATE TABLE IF NOT EXISTS inventory_reservations (
    order_id    uuid        NOT NULL,
    sku         text        NOT NULL REFERENCES inventory (sku),
    quantity    integer     NOT NULL CHECK (quantity > 0),
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);

INSERT INTO inventory (sku, name, stock) VALUES
    ('SKU-1', 'Widget', 1000000),
    ('SKU-2', 'Gadget', 1000000),
    ('SKU-3', 'Gizmo', 1000000),
    ('SKU-4', 'Sprocket', 1000000),
    ('SKU-RARE', 'Limited edition print', 3)
ON CONFLICT (sku) DO NOTHING;
