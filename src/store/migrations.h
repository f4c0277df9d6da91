/* Versioned SQL migrations, embedded at build time (cmake/embed_sql.cmake). */
#ifndef OUTBOX_STORE_MIGRATIONS_H
#define OUTBOX_STORE_MIGRATIONS_H

typedef struct outbox_migration_s {
    int version;      /* from the file name: 0001_x.sql -> 1 */
    const char *name; /* file name without .sql; NULL ends the table */
    const char *sql;
} outbox_migration_t;

/** The library's own migrations (the files in migrations/), NULL-terminated. */
extern const outbox_migration_t outbox_migrations[];

#endif
