// Package testenv starts real PostgreSQL clusters and the S3 (versitygw,
// MinIO), Azure (Azurite), GCS (fake-gcs-server) and SFTP (sshd) test
// servers for tests. The binaries come from `make deps` (.ci/deps.sh):
// PostgreSQL 15 from Debian, the other majors from $PGARK_CACHE/pg/<major>,
// the full client tools of 17 and 18 from $PGARK_CACHE/pgclient/<major>
// (see ClientToolsDir), the test servers below $PGARK_CACHE.
//
// PostgreSQL refuses to run as root. When the tests run as root, every PostgreSQL process
// (initdb, postgres, and therefore archive_command and restore_command) runs as the `postgres`
// user, in directories from SharedDir. Anything such a process must write (a repository, a
// spool) must belong to postgres: create it with MkdirShared, or run the command that creates
// it through RunAsPostgres, or fix it afterwards with ChownToPostgres.
//
// The HTTP test servers share one process lifecycle (server.go): their own
// process group, an HTTP readiness check, SIGTERM then SIGKILL at the
// test's cleanup, another free port when the start fails, their log shown
// when the test failed.
package testenv
