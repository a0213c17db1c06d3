package scratch

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Config configures a scratch server.
type Config struct {
	// Dir is the scratch directory: New creates it (mode 0700) and Remove deletes it. It
	// holds the data directory (DataDir), the unix socket, pg_hba.conf, pg_ident.conf and
	// the server log (postgres.log). Absolute path.
	Dir string
	// MarkerDir holds the marker files (one per scratch server) that CleanStale reads.
	MarkerDir string
	// Major is the PostgreSQL major of the backup; the server binary must be of it.
	Major int
	// BinDir holds postgres (and maybe pg_verifybackup, pg_amcheck); "" looks in the
	// usual places (see FindBinDir).
	BinDir string
	// RestoreCommand, when set, is passed as restore_command (the restore already wrote it
	// into postgresql.auto.conf; the command line makes sure nothing overrides it).
	RestoreCommand string
	// Port names the socket file (.s.PGSQL.<port>); no TCP port is opened. Default 5432.
	Port int
	// User is the role to connect as: the restored cluster's superuser. Default "postgres".
	User string
	// UID and GID own Dir and run the server when the caller is root; -1 means the
	// current user (the default when both are 0 and the caller is not root).
	UID, GID int
	// Settings are added to (or replace) the overrides; a value of "" is passed as ''.
	Settings map[string]string
	// Log receives progress; nil discards.
	Log *slog.Logger
}

func (c *Config) validate() error {
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("scratch: directory %q is not an absolute path", c.Dir)
	}
	if c.MarkerDir == "" || !filepath.IsAbs(c.MarkerDir) {
		return fmt.Errorf("scratch: marker directory %q is not an absolute path", c.MarkerDir)
	}
	c.Dir, c.MarkerDir = filepath.Clean(c.Dir), filepath.Clean(c.MarkerDir)
	if c.Major < 10 {
		return fmt.Errorf("scratch: PostgreSQL major %d is not supported", c.Major)
	}
	if c.Port == 0 {
		c.Port = 5432
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("scratch: port %d out of range", c.Port)
	}
	if c.User == "" {
		c.User = "postgres"
	}
	// A unix socket path is limited to 107 bytes (sun_path).
	if sock := filepath.Join(c.Dir, ".s.PGSQL."+strconv.Itoa(c.Port)); len(sock) > 107 {
		return fmt.Errorf("scratch: the socket path %s is longer than the 107 bytes a unix socket allows; choose a shorter scratch directory", sock)
	}
	if strings.ContainsAny(c.Dir, "\n\r\x00'\\,") {
		return errors.New("scratch: the scratch directory's path holds a quote, backslash, comma or line break")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Overrides returns the settings that make a restored production configuration safe to run
// on a scratch server, for a server of the given major whose scratch directory is dir and
// whose data directory is dataDir. They are passed on the postgres command line, which wins
// over postgresql.conf and postgresql.auto.conf. Only settings that exist in that major are
// returned (an unknown one would stop the server).
func Overrides(major int, dir, dataDir string, port int, restoreCommand string) map[string]string {
	s := map[string]string{
		// Where it lives: never the production server's files.
		"data_directory":    dataDir,
		"hba_file":          filepath.Join(dir, "pg_hba.conf"),
		"ident_file":        filepath.Join(dir, "pg_ident.conf"),
		"external_pid_file": "",
		"cluster_name":      "pgark-scratch",
		// Who can reach it: the owner, through a socket in the scratch directory.
		"listen_addresses":        "",
		"port":                    strconv.Itoa(port),
		"unix_socket_directories": dir,
		"unix_socket_group":       "",
		"unix_socket_permissions": "0700",
		"ssl":                     "off",
		"bonjour":                 "off",
		// Nothing leaves it: no archiving, no replication, no subscriptions.
		"archive_mode":                      "off",
		"archive_command":                   "",
		"archive_cleanup_command":           "",
		"recovery_end_command":              "",
		"primary_conninfo":                  "",
		"primary_slot_name":                 "",
		"max_wal_senders":                   "0",
		"max_logical_replication_workers":   "0",
		"max_sync_workers_per_subscription": "0",
		"synchronous_standby_names":         "",
		// Nothing that may be missing here, nor background work we do not need.
		"shared_preload_libraries":  "",
		"session_preload_libraries": "",
		"local_preload_libraries":   "",
		"huge_pages":                "off",
		"autovacuum":                "off",
		"hot_standby":               "off",
		"restart_after_crash":       "off",
		"jit":                       "off", // no JIT: systemd's MemoryDenyWriteExecute, less memory
		// Modest memory: it shares the host with production.
		"shared_buffers":                 "128MB",
		"max_connections":                "20",
		"superuser_reserved_connections": "3",
		"work_mem":                       "4MB",
		"maintenance_work_mem":           "64MB",
		// A log we can read: stderr into the scratch directory, in English.
		"logging_collector": "off",
		"log_destination":   "stderr",
		"log_min_messages":  "warning",
		"log_line_prefix":   "%m [%p] ",
		"lc_messages":       "C",
	}
	if restoreCommand != "" {
		s["restore_command"] = restoreCommand
	}
	if major <= 14 {
		// Debian points it at /var/run/postgresql, shared with the production server.
		s["stats_temp_directory"] = filepath.Join(dir, "stats_temp")
	}
	if major >= 15 {
		s["archive_library"] = ""
	}
	if major >= 16 {
		s["reserved_connections"] = "0"
	}
	if major >= 17 {
		s["sync_replication_slots"] = "off"
		s["event_triggers"] = "off"
		s["summarize_wal"] = "off"
	}
	return s
}

// args renders settings as postgres command-line arguments, sorted by name.
func args(settings map[string]string) []string {
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]string, 0, 2*len(names))
	for _, k := range names {
		out = append(out, "-c", k+"="+settings[k])
	}
	return out
}

// hbaConf lets the local socket in (trust): the socket's directory and the socket itself
// are reachable only by the server's owner (and root).
const hbaConf = "# pgark scratch server: only the owner reaches the socket (mode 0700)\nlocal all all trust\n"
