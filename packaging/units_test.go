package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// services are the scheduled units: name, the pgark command and whether it
// is background work (Nice, idle I/O).
var services = []struct {
	name, command string
	background    bool
}{
	{"backup", "backup", true},
	{"dump", "dump", true},
	{"retain", "retain", true},
	{"copy", "copy", true},
	{"check", "check", false},
	{"drill", "drill", false},
}

func readUnit(t *testing.T, name string) *Unit {
	t.Helper()
	u, err := ReadUnit(filepath.Join("systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUnits: each scheduled service runs its pgark command as postgres with
// /etc/pgark/%i.conf, sandboxed, with the failure hook; its timer carries
// the schedule with a random delay and catch-up; nothing else is shipped.
func TestUnits(t *testing.T) {
	want := []string{"pgark-failure@.service"}
	for _, s := range services {
		want = append(want, "pgark-"+s.name+"@.service", "pgark-"+s.name+"@.timer")
		u := readUnit(t, "pgark-"+s.name+"@.service")
		args, err := u.ExecStart("main")
		if err != nil {
			t.Fatal(err)
		}
		if len(args) < 4 || args[0] != "/usr/bin/pgark" || args[1] != s.command || !slices.Equal(args[2:4], []string{"--config", "/etc/pgark/main.conf"}) {
			t.Errorf("%s: ExecStart %q, want /usr/bin/pgark %s --config /etc/pgark/%%i.conf ...", u.Name, args, s.command)
		}
		for k, v := range map[string]string{
			"Type": "oneshot", "User": "postgres", "Group": "postgres",
			"ProtectSystem": "strict", "NoNewPrivileges": "true", "PrivateTmp": "true",
		} {
			if got := u.Value("Service", k); got != v {
				t.Errorf("%s: %s=%q, want %q", u.Name, k, got, v)
			}
		}
		if got := u.Values("Service", "ReadWritePaths"); !slices.Contains(got, "-/var/lib/pgark") {
			t.Errorf("%s: ReadWritePaths=%q, want -/var/lib/pgark among them", u.Name, got)
		}
		if got := u.Value("Unit", "OnFailure"); got != "pgark-failure@%n.service" {
			t.Errorf("%s: OnFailure=%q", u.Name, got)
		}
		if bg := u.Value("Service", "IOSchedulingClass") == "idle" && u.Value("Service", "Nice") != ""; bg != s.background {
			t.Errorf("%s: Nice and IOSchedulingClass=idle set: %v, want %v", u.Name, bg, s.background)
		}
		tm := readUnit(t, "pgark-"+s.name+"@.timer")
		for k, v := range map[string]string{"Persistent": "true"} {
			if got := tm.Value("Timer", k); got != v {
				t.Errorf("%s: %s=%q, want %q", tm.Name, k, got, v)
			}
		}
		if tm.Value("Timer", "OnCalendar") == "" || tm.Value("Timer", "RandomizedDelaySec") == "" {
			t.Errorf("%s: OnCalendar or RandomizedDelaySec missing", tm.Name)
		}
		if got := tm.Value("Install", "WantedBy"); got != "timers.target" {
			t.Errorf("%s: WantedBy=%q", tm.Name, got)
		}
	}
	// check: a WARNING (exit 1) is not a failure, CRITICAL and UNKNOWN are.
	if got := readUnit(t, "pgark-check@.service").Value("Service", "SuccessExitStatus"); got != "1" {
		t.Errorf("pgark-check@.service: SuccessExitStatus=%q, want 1", got)
	}
	ents, err := os.ReadDir("systemd")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("systemd/ holds %q, want %q", got, want)
	}
}

// cronSchedule turns the OnCalendar forms the timers use into cron's five
// fields: "Sun *-*-* 01:00:00", "*-*-* 02:00:00", "*:0/5".
func cronSchedule(onCalendar string) (string, error) {
	days := map[string]string{"Sun": "0", "Mon": "1", "Tue": "2", "Wed": "3", "Thu": "4", "Fri": "5", "Sat": "6"}
	f := strings.Fields(onCalendar)
	dow := "*"
	if len(f) == 3 {
		d, ok := days[f[0]]
		if !ok {
			return "", fmt.Errorf("day %q", f[0])
		}
		dow, f = d, f[1:]
	}
	switch {
	case len(f) == 1 && strings.HasPrefix(f[0], "*:0/"):
		return fmt.Sprintf("*/%s * * * %s", strings.TrimPrefix(f[0], "*:0/"), dow), nil
	case len(f) == 2 && f[0] == "*-*-*":
		var h, m, s int
		if _, err := fmt.Sscanf(f[1], "%d:%d:%d", &h, &m, &s); err != nil || s != 0 {
			return "", fmt.Errorf("time %q", f[1])
		}
		return fmt.Sprintf("%d %d * * %s", m, h, dow), nil
	}
	return "", fmt.Errorf("OnCalendar=%q: not a form this test knows", onCalendar)
}

// TestCronMatchesUnits: each line of the cron schedule runs, as postgres,
// exactly the command of the unit for cluster "main" (a redirection of its
// output aside), at its timer's time; one line per unit.
func TestCronMatchesUnits(t *testing.T) {
	ents, err := ReadCron(filepath.Join("cron", "pgark"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(services) {
		t.Fatalf("cron/pgark has %d entries, want %d (one per unit)", len(ents), len(services))
	}
	for i, s := range services {
		e := ents[i]
		u := readUnit(t, "pgark-"+s.name+"@.service")
		args, err := u.ExecStart("main")
		if err != nil {
			t.Fatal(err)
		}
		cmd, redirect, _ := strings.Cut(e.Command, " >")
		if cmd != strings.Join(args, " ") || strings.ContainsAny(redirect, ";|&") {
			t.Errorf("cron line %d runs %q, %s runs %q", i+1, e.Command, u.Name, strings.Join(args, " "))
		}
		if e.User != "postgres" {
			t.Errorf("cron line %d runs as %q", i+1, e.User)
		}
		cal := readUnit(t, "pgark-"+s.name+"@.timer").Value("Timer", "OnCalendar")
		want, err := cronSchedule(cal)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(e.Schedule[:], " "); got != want {
			t.Errorf("cron line %d (%s) at %q, its timer at %q (%q)", i+1, s.name, got, cal, want)
		}
	}
}

func TestExecStartExpansion(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) *Unit {
		p := filepath.Join(dir, "x@.service")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		u, err := ReadUnit(p)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	u := write("[Service]\nExecStart=/bin/x --a %i --b=%n 100%%\n")
	got, err := u.ExecStart("db1")
	if want := []string{"/bin/x", "--a", "db1", "--b=x@db1.service", "100%"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ExecStart = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{
		"[Service]\nExecStart=-/bin/x\n", "[Service]\nExecStart=/bin/x 'a b'\n", "[Service]\nExecStart=/bin/x %h\n",
		"[Service]\nExecStart=/bin/x\nExecStart=/bin/y\n", "[Unit]\nDescription=x\n",
	} {
		if got, err := write(bad).ExecStart("db1"); err == nil {
			t.Errorf("ExecStart of %q = %q, want an error", bad, got)
		}
	}
	if _, err := ReadUnit(filepath.Join(dir, "missing.service")); err == nil {
		t.Error("ReadUnit of a missing file succeeded")
	}
}
