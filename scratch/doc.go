// Package scratch brings up a private, throw-away PostgreSQL server from a restored data
// directory, waits until it has recovered to its target and promoted, and takes it down
// again. `pgark drill` and `pgark dump-restore --target-*` use it; it never touches the
// repository.
//
// # Use
//
//	s, err := scratch.New(scratch.Config{Dir: dir, MarkerDir: markers, Major: 17,
//		BinDir: bin, RestoreCommand: rc, UID: uid, GID: gid})
//	defer s.Close(ctx, false)  // Stop (fast, then immediate, then SIGKILL), then Remove
//	// s.DataDir() exists and is empty: restore the backup into it (package restore,
//	// with recovery_target_action = promote when there is a target), then:
//	err = s.Start(ctx)          // postgres with the safety overrides, no TCP listener
//	err = s.WaitPromoted(ctx)   // recovery ended and the server accepts connections
//	r, err := s.Recovery(ctx)   // replay LSN and time reached, timeline, databases
//	dsn := s.ConnString("shop") // "host=<Dir> port=5432 user=postgres dbname=shop ..."
//
// Config.Dir is the scratch directory; the data directory is DataDir() (Dir/pgdata), the
// server log LogFile() (Dir/postgres.log), the socket .s.PGSQL.<Port> in Dir. The caller
// chooses Dir and checks that it is not inside a data directory or tablespace it must
// not touch. FindBinDir and Tool find the server binaries and client tools (pg_verifybackup,
// pg_amcheck) of a major in --pg-bin or the usual places. Close(ctx, true) stops the
// server but keeps Dir for inspection (only the marker goes).
//
// New creates Dir (it must not exist, or be empty) and writes a marker file in MarkerDir
// (the drill's pid and start time, Dir, the data directory) before anything else happens;
// Remove deletes the marker last. CleanStale(ctx, markerDir, force, log) finds markers
// whose process is gone (a kill -9), stops a postmaster still running on their data
// directory (only when postmaster.pid, the process's executable and its working directory
// all say it is a postgres of that directory) and removes their directory.
//
// # What the scratch server is not allowed to do
//
// The data directory comes from production: its postgresql.conf and postgresql.auto.conf
// may carry an archive_command, a primary_conninfo, shared_preload_libraries that are not
// installed here, a data_directory or external_pid_file pointing at the production
// server's files, subscriptions that would pull from a production publisher, huge pages
// or SSL files this host lacks. Start passes Overrides(major, ...) on the postgres command
// line (-c name=value), which wins over every configuration file: no TCP listener
// (listen_addresses empty), a unix socket in Dir only (mode 0700), its own pg_hba.conf
// (local trust) and pg_ident.conf in Dir, archive_mode = off, no replication senders,
// logical replication workers, slot synchronization or preload libraries, no
// autovacuum, no hot standby, modest memory, and the restore_command given in Config.
// Config.Settings can add to or change them.
//
// As root, the server runs as the owner of Dir (Config.UID and GID; PostgreSQL refuses
// root). The server is started in its own session, so that it survives a kill -9 of the
// caller: the marker makes the next caller clean it up.
//
// Errors: a missing or mismatched server binary is ErrBinaries (its message names the
// major needed); a server that stops before the end of recovery is ErrRecovery, with the
// FATAL or PANIC lines of its log.
package scratch
