package recoveryconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pgark/pgark/internal/rootdir"
)

// Options configures Write.
type Options struct {
	// RestoreCommand is the full command line, e.g.
	// `'/usr/local/bin/pgark' wal-fetch --config '/etc/pgark.conf' %f %p` (built by the
	// CLI; it never contains a secret, since postgresql.auto.conf ends up in backups).
	RestoreCommand string
	// At most one recovery target. TargetTime needs an explicit UTC offset or zone
	// (RFC 3339, or PostgreSQL's "2026-11-24 15:45:00+01"); it is written normalized to a
	// numeric offset.
	TargetTime, TargetLSN, TargetXID, TargetName string
	TargetImmediate                              bool
	TargetTimeline                               string // "latest" (default), "current", or a number
	TargetInclusive                              *bool  // only with a time, LSN or XID target
	TargetAction                                 string // "promote", "pause", "shutdown" ("" = PostgreSQL's default); needs a target
	Standby                                      bool   // standby.signal instead of recovery.signal
	KeepArchiving                                bool   // leave archive_mode as in the backup; default: set archive_mode = off
}

// RestoreMarker is the file that package restore creates first and removes last in a
// directory it extracts into: Write refuses a data directory that holds it (an
// unfinished restore).
const RestoreMarker = ".pgark-restore-in-progress"

const (
	blockBegin   = "# --- pgark restore: begin"
	blockEnd     = "# --- pgark restore: end"
	autoConfFile = "postgresql.auto.conf"
)

// removedSettings are the settings that an earlier restore, or the source server's role, may
// have left in postgresql.auto.conf: they are removed before pgark's block is appended.
var removedSettings = map[string]bool{
	"restore_command": true, "archive_cleanup_command": true, "recovery_end_command": true,
	"recovery_target": true, "recovery_target_time": true, "recovery_target_lsn": true,
	"recovery_target_xid": true, "recovery_target_name": true, "recovery_target_timeline": true,
	"recovery_target_inclusive": true, "recovery_target_action": true,
	"primary_conninfo": true, "primary_slot_name": true,
}

// archivingSettings are removed too unless KeepArchiving.
var archivingSettings = map[string]bool{"archive_mode": true, "archive_command": true, "archive_library": true}

// The patterns are compiled at first use, not at every start of the binary
// (wal-push and wal-fetch run once per segment and never use them).
var (
	lsnRe = lazyRE(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)
	xidRe = lazyRE(`^[0-9]{1,20}$`)
	tliRe = lazyRE(`^[0-9]{1,10}$`)
	// 2026-11-24 15:45[:00[.123]][ ]zone, with ' ' or 'T' between date and time.
	timeRe = lazyRE(`^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?\s*(.*)$`)
	offRe  = lazyRE(`^([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?$`)
)

func lazyRE(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// Validate checks the options without touching any file. The CLI should call it before a
// restore starts, so that a typo does not cost a whole extraction.
func (o Options) Validate() error {
	_, err := o.normalized()
	return err
}

// target is one setting pgark writes.
type targetSetting struct{ name, value string }

// normalized validates o and returns the target settings to write, in order.
func (o Options) normalized() ([]targetSetting, error) {
	if strings.TrimSpace(o.RestoreCommand) == "" {
		return nil, errors.New("recovery: no restore_command")
	}
	if err := checkValue("restore_command", o.RestoreCommand); err != nil {
		return nil, err
	}
	if !strings.Contains(o.RestoreCommand, "%p") {
		return nil, fmt.Errorf("recovery: restore_command %q has no %%p (where PostgreSQL wants the file)", o.RestoreCommand)
	}
	n := 0
	var target *targetSetting
	if o.TargetTime != "" {
		n++
		t, err := ParseTargetTime(o.TargetTime)
		if err != nil {
			return nil, err
		}
		target = &targetSetting{"recovery_target_time", formatTime(t)}
	}
	if o.TargetLSN != "" {
		n++
		if !lsnRe().MatchString(o.TargetLSN) {
			return nil, fmt.Errorf("recovery: target LSN %q is not an LSN like 0/1A2B3C4D", o.TargetLSN)
		}
		target = &targetSetting{"recovery_target_lsn", strings.ToUpper(o.TargetLSN)}
	}
	if o.TargetXID != "" {
		n++
		v, err := strconv.ParseUint(o.TargetXID, 10, 64)
		if !xidRe().MatchString(o.TargetXID) || err != nil || v == 0 {
			return nil, fmt.Errorf("recovery: target XID %q is not a transaction ID (a positive decimal number)", o.TargetXID)
		}
		target = &targetSetting{"recovery_target_xid", o.TargetXID}
	}
	if o.TargetName != "" {
		n++
		if len(o.TargetName) > 63 {
			return nil, fmt.Errorf("recovery: target name %q is longer than PostgreSQL's 63 bytes", o.TargetName)
		}
		if err := checkValue("recovery_target_name", o.TargetName); err != nil {
			return nil, err
		}
		target = &targetSetting{"recovery_target_name", o.TargetName}
	}
	if o.TargetImmediate {
		n++
		target = &targetSetting{"recovery_target", "immediate"}
	}
	if n > 1 {
		return nil, errors.New("recovery: give at most one recovery target (time, LSN, XID, name or immediate)")
	}
	tli := o.TargetTimeline
	switch {
	case tli == "":
		tli = "latest"
	case tli == "latest" || tli == "current":
	case tliRe().MatchString(tli):
		v, err := strconv.ParseUint(tli, 10, 32)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("recovery: target timeline %q is not \"latest\", \"current\" or a timeline number", o.TargetTimeline)
		}
		tli = strconv.FormatUint(v, 10)
	default:
		return nil, fmt.Errorf("recovery: target timeline %q is not \"latest\", \"current\" or a timeline number", o.TargetTimeline)
	}
	if o.TargetInclusive != nil && o.TargetTime == "" && o.TargetLSN == "" && o.TargetXID == "" {
		return nil, errors.New("recovery: target inclusive/exclusive applies only to a time, LSN or XID target")
	}
	switch o.TargetAction {
	case "", "promote", "pause", "shutdown":
	default:
		return nil, fmt.Errorf("recovery: target action %q is not promote, pause or shutdown", o.TargetAction)
	}
	if o.TargetAction != "" && target == nil {
		return nil, fmt.Errorf("recovery: target action %q needs a recovery target (without one, recovery replays all WAL and ends)", o.TargetAction)
	}

	// Every target setting is written: the empty ones override stale values that
	// postgresql.conf may hold (PostgreSQL refuses more than one target). The empty ones
	// come first: PostgreSQL applies settings in the order of their last occurrence, and
	// its assign hooks (13-15 at least) fail even on an empty target once another target
	// is set.
	out := []targetSetting{{"restore_command", o.RestoreCommand}}
	for _, name := range []string{"recovery_target", "recovery_target_time", "recovery_target_lsn", "recovery_target_xid", "recovery_target_name"} {
		if target == nil || target.name != name {
			out = append(out, targetSetting{name, ""})
		}
	}
	if target != nil {
		out = append(out, *target)
	}
	out = append(out, targetSetting{"recovery_target_timeline", tli})
	if o.TargetInclusive != nil {
		out = append(out, targetSetting{"recovery_target_inclusive", strconv.FormatBool(*o.TargetInclusive)})
	}
	if o.TargetAction != "" {
		out = append(out, targetSetting{"recovery_target_action", o.TargetAction})
	}
	return out, nil
}

func checkValue(name, v string) error {
	if strings.ContainsAny(v, "\n\r\x00") {
		return fmt.Errorf("recovery: %s contains a line break or NUL byte", name)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("recovery: %s is not valid UTF-8", name)
	}
	return nil
}

// ParseTargetTime parses a recovery target time that names its UTC offset or zone:
// RFC 3339 ("2026-11-24T15:45:00+01:00", "...Z") or PostgreSQL's forms
// ("2026-11-24 15:45:00+01", "2026-11-24 15:45:00.5 +0100", "2026-11-24 15:45 UTC",
// "2026-11-24 15:45:00 Europe/Paris"). A time without one is refused: PostgreSQL would
// read it in the restored server's TimeZone, which is rarely what the user assumed.
func ParseTargetTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	m := timeRe().FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, fmt.Errorf("recovery: target time %q is not a date and time like 2026-11-24 15:45:00+01 or 2026-11-24T14:45:00Z", s)
	}
	num := func(x string) int { v, _ := strconv.Atoi(x); return v }
	y, mo, d, h, mi, sec := num(m[1]), num(m[2]), num(m[3]), num(m[4]), num(m[5]), num(m[6])
	ns := 0
	if m[7] != "" {
		frac := (m[7][1:] + "000000000")[:9]
		ns = num(frac)
	}
	zone := strings.TrimSpace(m[8])
	var loc *time.Location
	switch {
	case zone == "":
		return time.Time{}, fmt.Errorf("recovery: target time %q has no UTC offset or time zone, so it is ambiguous; add one, e.g. %q or %q", s, s+"+00", s+" Europe/Paris")
	case strings.EqualFold(zone, "Z") || strings.EqualFold(zone, "UTC") || strings.EqualFold(zone, "GMT"):
		loc = time.UTC
	case offRe().MatchString(zone):
		z := offRe().FindStringSubmatch(zone)
		zh, zm, zs := num(z[2]), num(z[3]), num(z[4])
		if zh > 15 || zm > 59 || zs > 59 {
			return time.Time{}, fmt.Errorf("recovery: target time %q: bad UTC offset %q", s, zone)
		}
		off := zh*3600 + zm*60 + zs
		if z[1] == "-" {
			off = -off
		}
		loc = time.FixedZone(zone, off)
	case strings.Contains(zone, "/"):
		l, err := time.LoadLocation(zone)
		if err != nil {
			return time.Time{}, fmt.Errorf("recovery: target time %q: unknown time zone %q: %v", s, zone, err)
		}
		loc = l
	default:
		return time.Time{}, fmt.Errorf("recovery: target time %q: time zone %q is not a UTC offset, UTC, or a zone name like Europe/Paris (abbreviations are ambiguous)", s, zone)
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, ns, loc)
	if t.Year() != y || int(t.Month()) != mo || t.Day() != d || t.Hour() != h || t.Minute() != mi || t.Second() != sec {
		return time.Time{}, fmt.Errorf("recovery: target time %q is not a valid date and time", s)
	}
	return t, nil
}

// formatTime writes t for PostgreSQL with a numeric offset (microsecond precision).
func formatTime(t time.Time) string {
	return t.Format("2006-01-02 15:04:05.999999-07:00")
}

// quote renders a value the way ALTER SYSTEM writes it: single-quoted, with ' and \
// doubled (the configuration file lexer reads backslash escapes inside quotes).
func quote(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// parseLine parses one configuration line. It returns the setting's name (lower case)
// and its value when the line is "name [=] value [# comment]"; name is "" for blank and
// comment lines. ok is false when a name was read but the rest is not a valid value.
func parseLine(line string) (name, value string, ok bool) {
	s := strings.TrimLeft(line, " \t\f\v")
	s = strings.TrimRight(s, "\r")
	if s == "" || s[0] == '#' {
		return "", "", true
	}
	isLetter := func(c byte) bool { return c == '_' || c >= 0x80 || (c|0x20) >= 'a' && (c|0x20) <= 'z' }
	isIDChar := func(c byte) bool { return isLetter(c) || c >= '0' && c <= '9' || c == '.' || c == '$' }
	if !isLetter(s[0]) {
		return "", "", false
	}
	i := 0
	for i < len(s) && isIDChar(s[i]) {
		i++
	}
	name = strings.ToLower(s[:i])
	s = strings.TrimLeft(s[i:], " \t\f\v")
	if strings.HasPrefix(s, "=") {
		s = strings.TrimLeft(s[1:], " \t\f\v")
	}
	if s == "" || s[0] == '#' {
		return name, "", false
	}
	if s[0] == '\'' {
		var sb strings.Builder
		j := 1
		closed := false
		for j < len(s) {
			c := s[j]
			switch {
			case c == '\'' && j+1 < len(s) && s[j+1] == '\'':
				sb.WriteByte('\'')
				j += 2
			case c == '\'':
				closed = true
				j++
			case c == '\\' && j+1 < len(s):
				e := s[j+1]
				j += 2
				switch e {
				case 'b':
					sb.WriteByte('\b')
				case 'f':
					sb.WriteByte('\f')
				case 'n':
					sb.WriteByte('\n')
				case 'r':
					sb.WriteByte('\r')
				case 't':
					sb.WriteByte('\t')
				default:
					if e >= '0' && e <= '7' {
						v := int(e - '0')
						for k := 0; k < 2 && j < len(s) && s[j] >= '0' && s[j] <= '7'; k++ {
							v = v*8 + int(s[j]-'0')
							j++
						}
						sb.WriteByte(byte(v))
					} else {
						sb.WriteByte(e)
					}
				}
			default:
				sb.WriteByte(c)
				j++
			}
			if closed {
				break
			}
		}
		if !closed {
			return name, "", false
		}
		value, s = sb.String(), s[j:]
	} else {
		j := strings.IndexAny(s, " \t\f\v#")
		if j < 0 {
			j = len(s)
		}
		value, s = s[:j], s[j:]
	}
	s = strings.TrimLeft(s, " \t\f\v")
	if s != "" && s[0] != '#' {
		return name, value, false
	}
	return name, value, true
}

// cleanAutoConf removes from postgresql.auto.conf the settings pgark is about to write
// (and, unless keepArchiving, the archiving settings) and any earlier pgark block.
func cleanAutoConf(content string, keepArchiving bool) (string, []string) {
	var out, removed []string
	lines := strings.Split(content, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	inBlock := false
	for _, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, blockBegin) {
			inBlock = true
			continue
		}
		if inBlock && strings.HasPrefix(trimmed, blockEnd) {
			inBlock = false
			continue
		}
		if inBlock {
			// Everything in an earlier pgark block was written by pgark for that restore
			// (ALTER SYSTEM drops comments, so an intact block was not edited since).
			removed = append(removed, trimmed)
			continue
		}
		name, _, _ := parseLine(line)
		if name == "" {
			out = append(out, line)
			continue
		}
		if removedSettings[name] || (!keepArchiving && archivingSettings[name]) {
			removed = append(removed, name)
			continue
		}
		out = append(out, line)
	}
	s := strings.Join(out, "\n")
	if s != "" {
		s += "\n"
	}
	return s, removed
}

// Write prepares a restored data directory for archive recovery: it cleans
// postgresql.auto.conf of earlier recovery settings (and, unless o.KeepArchiving, of
// archive_mode/archive_command/archive_library), appends pgark's block, creates
// recovery.signal (or standby.signal), and writes the server's backup_manifest (if
// manifest is not nil) so that pg_verifybackup can check the directory before the first
// start. Files it creates belong to the owner of pgdata, with its group access.
func Write(pgdata string, o Options, manifest []byte) error {
	settings, err := o.normalized()
	if err != nil {
		return err
	}
	st, err := os.Stat(pgdata)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("recovery: %s is not a directory", pgdata)
	}
	root, err := os.OpenRoot(pgdata)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer root.Close()
	if _, err := root.Lstat("PG_VERSION"); err != nil {
		return fmt.Errorf("recovery: %s is not a PostgreSQL data directory (no PG_VERSION)", pgdata)
	}
	if _, err := root.Lstat(RestoreMarker); err == nil {
		return fmt.Errorf("recovery: %s holds an unfinished pgark restore", pgdata)
	}
	if _, err := root.Lstat("postmaster.pid"); err == nil {
		return fmt.Errorf("recovery: %s has a postmaster.pid: is a server running on it?", pgdata)
	}
	if manifest != nil && !(bytes.HasPrefix(bytes.TrimLeft(manifest, " \t\r\n"), []byte("{")) && bytes.Contains(manifest, []byte(`"PostgreSQL-Backup-Manifest-Version"`))) {
		return errors.New("recovery: the manifest given is not a PostgreSQL backup_manifest")
	}
	w := writer{root: root, dir: pgdata, mode: 0o600, uid: -1, gid: -1}
	if st.Mode().Perm()&0o050 == 0o050 {
		w.mode = 0o640
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		w.uid, w.gid = int(sys.Uid), int(sys.Gid)
	}

	// postgresql.auto.conf
	var old []byte
	confMode, confUID, confGID := w.mode, w.uid, w.gid
	if cst, err := root.Lstat(autoConfFile); err == nil {
		if !cst.Mode().IsRegular() {
			return fmt.Errorf("recovery: %s is not a regular file", filepath.Join(pgdata, autoConfFile))
		}
		f, err := root.OpenFile(autoConfFile, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
		old, err = io.ReadAll(io.LimitReader(f, 64<<20))
		f.Close()
		if err != nil {
			return fmt.Errorf("recovery: reading %s: %w", autoConfFile, err)
		}
		confMode = cst.Mode().Perm()
		if sys, ok := cst.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			confUID, confGID = int(sys.Uid), int(sys.Gid)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recovery: %w", err)
	}
	cleaned, _ := cleanAutoConf(string(old), o.KeepArchiving)
	var sb strings.Builder
	sb.WriteString(cleaned)
	if cleaned != "" && !strings.HasSuffix(cleaned, "\n\n") {
		sb.WriteString("\n")
	}
	fmt.Fprintf(&sb, "%s (written %s)\n", blockBegin, time.Now().UTC().Format("2006-01-02 15:04:05 MST"))
	sb.WriteString("# Recovery settings of this restored copy. Earlier recovery settings were removed\n" +
		"# from this file; the empty values below also override stale ones that postgresql.conf\n" +
		"# may hold (the last value of a setting wins, and PostgreSQL refuses two targets).\n")
	for _, s := range settings {
		fmt.Fprintf(&sb, "%s = %s\n", s.name, quote(s.value))
	}
	for _, name := range []string{"primary_conninfo", "primary_slot_name", "archive_cleanup_command", "recovery_end_command"} {
		fmt.Fprintf(&sb, "%s = ''\n", name)
	}
	if !o.KeepArchiving {
		sb.WriteString("# Archiving is off: a restored copy must not push WAL of its own, diverging history\n" +
			"# into the production archive. (An empty archive_command with archive_mode on would\n" +
			"# not help: WAL would pile up in pg_wal until the disk is full.) To archive from this\n" +
			"# copy, point archive_command at another repository and set archive_mode = on.\n")
		sb.WriteString("archive_mode = 'off'\n")
	}
	sb.WriteString(blockEnd + "\n")
	if err := w.write(autoConfFile, []byte(sb.String()), confMode, confUID, confGID); err != nil {
		return err
	}

	// Signal files: standby.signal wins over recovery.signal in PostgreSQL, and a backup
	// taken from a standby carries standby.signal, so the other one is removed.
	signal, other := "recovery.signal", "standby.signal"
	if o.Standby {
		signal, other = other, signal
	}
	if err := root.Remove(other); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recovery: removing %s: %w", other, err)
	}
	if err := w.write(signal, nil, w.mode, w.uid, w.gid); err != nil {
		return err
	}
	if manifest != nil {
		if err := w.write("backup_manifest", manifest, w.mode, w.uid, w.gid); err != nil {
			return err
		}
	}
	return rootdir.Sync(root, ".")
}

type writer struct {
	root     *os.Root
	dir      string
	mode     fs.FileMode
	uid, gid int
}

// write replaces name atomically: a temporary file, fsync, rename, (the caller fsyncs the
// directory).
func (w writer) write(name string, data []byte, mode fs.FileMode, uid, gid int) (err error) {
	tmp := name + ".pgark-tmp"
	if err := w.root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("recovery: %w", err)
	}
	f, err := w.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			w.root.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("recovery: writing %s: %w", filepath.Join(w.dir, name), err)
	}
	if err = f.Chmod(mode); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if uid >= 0 {
		if err = f.Chown(uid, gid); err != nil {
			return fmt.Errorf("recovery: %w", err)
		}
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("recovery: fsync %s: %w", filepath.Join(w.dir, name), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	if err = w.root.Rename(tmp, name); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	return nil
}
