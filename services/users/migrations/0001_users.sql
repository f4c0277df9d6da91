-- users-service: the users. The password is kept only as an Argon2id hash
-- string (libsodium crypto_pwhash_str: algorithm, parameters, salt, hash).
CREATE TABLE IF NOT EXISTS users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL CHECK (email <> '' AND email = lower(email)),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique as the service stores them (lower-cased).
CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users (email);
