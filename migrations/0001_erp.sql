-- ERP-like demo/test schema, as db-sync targets hold it (see the manual's "Table
-- Processing Order"). Written to run unchanged on SQLite and PostgreSQL.

CREATE TABLE currency (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL,
    name        TEXT,
    rate        DOUBLE PRECISION,
    modify_id   INTEGER NOT NULL
);

CREATE TABLE terms_of_payment (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    days        INTEGER NOT NULL,
    modify_id   INTEGER NOT NULL
);

CREATE TABLE company (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    country     TEXT,
    currency_id INTEGER REFERENCES currency (id),
    terms_id    INTEGER REFERENCES terms_of_payment (id),
    created     DATE,
    modify_id   INTEGER NOT NULL
);

CREATE TABLE product (
    id           INTEGER PRIMARY KEY,
    product_type TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    price        NUMERIC(12, 2),
    unit         TEXT,
    modify_id    INTEGER NOT NULL
);

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    company_id  INTEGER NOT NULL REFERENCES company (id),
    order_date  DATE NOT NULL,
    status      TEXT NOT NULL,
    total       DOUBLE PRECISION,
    modify_id   INTEGER NOT NULL
);

CREATE TABLE order_row (
    id          INTEGER PRIMARY KEY,
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    product_id  INTEGER NOT NULL REFERENCES product (id),
    quantity    DOUBLE PRECISION NOT NULL,
    price       DOUBLE PRECISION,
    modify_id   INTEGER NOT NULL
);

CREATE TABLE invoice (
    id          INTEGER PRIMARY KEY,
    company_id  INTEGER NOT NULL REFERENCES company (id),
    order_id    INTEGER REFERENCES orders (id),
    invoice_date DATE NOT NULL,
    due_date    DATE,
    total       DOUBLE PRECISION,
    modify_id   INTEGER NOT NULL
);

CREATE TABLE invoice_row (
    id          INTEGER PRIMARY KEY,
    invoice_id  INTEGER NOT NULL REFERENCES invoice (id),
    product_id  INTEGER REFERENCES product (id),
    quantity    DOUBLE PRECISION NOT NULL,
    price       DOUBLE PRECISION,
    modify_id   INTEGER NOT NULL
);

CREATE INDEX order_row_order ON order_row (order_id);
CREATE INDEX invoice_row_invoice ON invoice_row (invoice_id);
CREATE INDEX product_type_id ON product (product_type, id);
CREATE INDEX currency_modify ON currency (modify_id);
CREATE INDEX terms_of_payment_modify ON terms_of_payment (modify_id);
CREATE INDEX company_modify ON company (modify_id);
CREATE INDEX product_modify ON product (modify_id);
CREATE INDEX orders_modify ON orders (modify_id);
CREATE INDEX order_row_modify ON order_row (modify_id);
CREATE INDEX invoice_modify ON invoice (modify_id);
CREATE INDEX invoice_row_modify ON invoice_row (modify_id);
