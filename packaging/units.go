package packaging

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Unit is a parsed systemd unit file: each section's keys and their values,
// in file order (a key may repeat, as ExecStart= resets do).
type Unit struct {
	// Name is the file name, e.g. pgark-backup@.service.
	Name     string
	sections map[string]map[string][]string
}

// ReadUnit parses the unit file at path. It accepts the subset of the
// format that pgark's units use (sections, key=value, comments) and refuses
// line continuations, which they do not use.
func ReadUnit(path string) (*Unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read unit: %w", err)
	}
	defer f.Close()
	u := &Unit{Name: filepath.Base(path), sections: map[string]map[string][]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case strings.HasSuffix(line, "\\"):
			return nil, fmt.Errorf("%s:%d: line continuations are not supported", path, ln)
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u.sections[section] == nil {
				u.sections[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("%s:%d: expected key=value in a section", path, ln)
		}
		k = strings.TrimSpace(k)
		u.sections[section][k] = append(u.sections[section][k], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read unit %s: %w", path, err)
	}
	return u, nil
}

// Values returns every value of key in section, in file order.
func (u *Unit) Values(section, key string) []string { return u.sections[section][key] }

// Value returns the last value of key in section ("" when unset), which is
// the one systemd applies for a single-valued setting.
func (u *Unit) Value(section, key string) string {
	v := u.sections[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// ExecStart returns the unit's one ExecStart= command line split into
// arguments, with the specifiers expanded for instance (%i, %I, %n, %%), as
// systemd runs it. Quoting, prefixes (-, @, +, ...) and other specifiers
// are refused: pgark's units use none of them.
func (u *Unit) ExecStart(instance string) ([]string, error) {
	lines := u.Values("Service", "ExecStart")
	if len(lines) != 1 {
		return nil, fmt.Errorf("%s: %d ExecStart= lines, want 1", u.Name, len(lines))
	}
	var args []string
	for i, w := range strings.Fields(lines[0]) {
		if strings.ContainsAny(w, `"'\;`) || i == 0 && strings.ContainsAny(w[:1], "-@+!:|") {
			return nil, fmt.Errorf("%s: ExecStart word %q: quoting and prefixes are not supported", u.Name, w)
		}
		a, err := u.expand(w, instance)
		if err != nil {
			return nil, err
		}
		args = append(args, a)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("%s: empty ExecStart=", u.Name)
	}
	return args, nil
}

// InstanceName is the name of the unit's instance, e.g.
// pgark-backup@main.service for instance main.
func (u *Unit) InstanceName(instance string) string {
	prefix, suffix, _ := strings.Cut(u.Name, "@")
	return prefix + "@" + instance + suffix
}

func (u *Unit) expand(w, instance string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if w[i] != '%' {
			b.WriteByte(w[i])
			continue
		}
		if i+1 == len(w) {
			return "", fmt.Errorf("%s: %q ends with %%", u.Name, w)
		}
		i++
		switch w[i] {
		case 'i', 'I':
			b.WriteString(instance)
		case 'n':
			b.WriteString(u.InstanceName(instance))
		case '%':
			b.WriteByte('%')
		default:
			return "", fmt.Errorf("%s: specifier %%%c in %q is not supported", u.Name, w[i], w)
		}
	}
	return b.String(), nil
}

// CronEntry is one command line of an /etc/cron.d file.
type CronEntry struct {
	// Schedule is the five time fields: minute, hour, day of month, month,
	// day of week.
	Schedule [5]string
	User     string
	// Command is the rest of the line, as cron hands it to the shell.
	Command string
}

// ReadCron parses an /etc/cron.d file: comments, VAR=value lines (skipped)
// and entries of five time fields, a user and a command.
func ReadCron(path string) ([]CronEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cron file: %w", err)
	}
	var out []CronEntry
	for ln, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 7 {
			if name, _, ok := strings.Cut(line, "="); ok && !strings.ContainsAny(name, " \t") {
				continue // an environment setting
			}
			return nil, fmt.Errorf("%s:%d: expected 5 time fields, a user and a command", path, ln+1)
		}
		e := CronEntry{User: f[5], Command: strings.Join(f[6:], " ")}
		copy(e.Schedule[:], f[:5])
		out = append(out, e)
	}
	return out, nil
}
