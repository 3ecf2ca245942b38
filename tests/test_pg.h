/* test_pg.h - a throw-away PostgreSQL cluster for the tests that run against
 * the PostgreSQL store (scripts/pg_cluster.sh; no service is assumed), and
 * fresh databases in it. */
#ifndef MN_TEST_PG_H
#define MN_TEST_PG_H

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char t_pg_dir[256], t_pg_conn[512];

/* Starts the cluster; its admin conninfo in t_pg_conn. 0 on success. */
static inline int test_pg_start(void) {
    snprintf(t_pg_dir, sizeof t_pg_dir, "/tmp/mnemo-pg-%d", (int)getpid());
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash scripts/pg_cluster.sh start %s", t_pg_dir);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    t_pg_conn[0] = 0;
    if (!fgets(t_pg_conn, sizeof t_pg_conn, p)) t_pg_conn[0] = 0;
    int rc = pclose(p);
    t_pg_conn[strcspn(t_pg_conn, "\n")] = 0;
    return rc == 0 && t_pg_conn[0] ? 0 : -1;
}

static inline void test_pg_stop(void) {
    if (!t_pg_dir[0]) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash scripts/pg_cluster.sh stop %s", t_pg_dir);
    if (system(cmd)) fprintf(stderr, "could not stop the cluster in %s\n", t_pg_dir);
}

static inline void test_pg_quiet(void *arg, const char *message) { (void)arg, (void)message; }

/* Runs one statement as the cluster's superuser in database db (NULL: the
 * admin database). 0 on success. */
static inline int test_pg_exec(const char *db, const char *sql) {
    char ci[768];
    snprintf(ci, sizeof ci, "%s%s%s", t_pg_conn, db ? " dbname=" : "", db ? db : "");
    PGconn *c = PQconnectdb(ci);
    int ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PQsetNoticeProcessor(c, test_pg_quiet, NULL);
        PGresult *r = PQexec(c, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok) fprintf(stderr, "test_pg_exec %s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "test_pg_exec: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

/* A new empty database `name`; its conninfo in spec. 0 on success. */
static inline int test_pg_fresh_db(const char *name, char *spec, size_t cap) {
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\"", name);
    if (test_pg_exec(NULL, sql)) return -1;
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
    if (test_pg_exec(NULL, sql)) return -1;
    snprintf(spec, cap, "%s dbname=%s", t_pg_conn, name);
    return 0;
}

#endif
