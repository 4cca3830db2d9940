/*
 * pg_migrations.h - the PostgreSQL schema as versioned migrations
 * (src/store/migrations/NNNN_name.sql), compiled into the binary by
 * scripts/embed_sql.sh and applied in order at start-up.
 */
#ifndef PAYD_STORE_PG_MIGRATIONS_H
#define PAYD_STORE_PG_MIGRATIONS_H

struct pg_migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct pg_migration pg_migrations[];
extern const int pg_migration_count;

#endif
