package packaging

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/testenv"
)

// testVersion is stamped into the packages that TestPackages builds.
const testVersion = "v1.2.3-test"

// run runs name args in dir and returns its combined output; it fails t
// when the command fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// needPackaging skips (or with PGARK_TEST_REQUIRE=1 fails) t unless this
// host can build and install packages: root, make, dpkg, systemd-analyze.
func needPackaging(t *testing.T) {
	t.Helper()
	testenv.EndToEnd(t)
	if os.Geteuid() != 0 {
		testenv.Missing(t, errors.New("packaging: installing the .deb needs root"))
	}
	for _, tool := range []string{"make", "dpkg", "dpkg-deb", "systemd-analyze", "sha256sum", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, fmt.Errorf("packaging: %s not found (Debian packages dpkg, systemd)", tool))
		}
	}
}

// TestPackages builds the release (make dist, both architectures), checks
// the checksums and binaries, installs the host's .deb with dpkg, runs
// pgark version, checks the installed files, verifies every unit with
// systemd-analyze, removes (config kept) and purges (config gone) it, and
// reads the .rpm's file list. The package is purged however the test ends.
func TestPackages(t *testing.T) {
	needPackaging(t)
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "pgark").Output(); err == nil && len(out) > 0 && !strings.Contains(string(out), "not-installed") {
		t.Fatalf("a pgark package is already installed (%s): this test installs and purges its own; remove it first", out)
	}
	for _, p := range []string{"/usr/bin/pgark", "/etc/pgark/pgark.conf"} {
		if _, err := os.Lstat(p); err == nil {
			t.Fatalf("%s exists: this test installs and purges the package; move it away first", p)
		}
	}
	// Package versions order as dpkg and rpm compare them.
	for v, want := range map[string]string{
		"v1.2.3": "1.2.3", "v1.2.3-rc1": "1.2.3~rc1", "v1.2.3-4-gabcdef0-dirty": "1.2.3+git4.abcdef0+dirty", "0.0.0-dev": "0.0.0~dev",
	} {
		out := run(t, "..", nil, "make", "-s", "-n", "dist", "VERSION="+v, "DIST_ARCHES=amd64")
		if !strings.Contains(out, "PGARK_VERSION="+want+" ") {
			t.Errorf("make dist VERSION=%s: package version is not %s:\n%s", v, want, out)
		}
	}
	dist := t.TempDir()
	run(t, "..", nil, "make", "dist", "DIST="+dist, "VERSION="+testVersion, "DIST_ARCHES=amd64 arm64")

	// Checksums: every artifact listed, every sum right.
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, filepath.Join(dist, "SHA256SUMS"))))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		sums[name] = sum
	}
	hostDeb := fmt.Sprintf("pgark_1.2.3~test_%s.deb", runtime.GOARCH)
	wantFiles := []string{
		"pgark-" + testVersion + "-linux-amd64", "pgark-" + testVersion + "-linux-arm64",
		"pgark_1.2.3~test_amd64.deb", "pgark_1.2.3~test_arm64.deb",
		"pgark-1.2.3~test-1.x86_64.rpm", "pgark-1.2.3~test-1.aarch64.rpm",
	}
	for _, f := range wantFiles {
		sum, ok := sums[f]
		if !ok {
			t.Errorf("SHA256SUMS lacks %s: %v", f, sums)
			continue
		}
		h := sha256.Sum256(readFile(t, filepath.Join(dist, f)))
		if hex.EncodeToString(h[:]) != sum {
			t.Errorf("%s: SHA-256 is not the one in SHA256SUMS", f)
		}
	}
	if len(sums) != len(wantFiles) {
		t.Errorf("SHA256SUMS lists %d files, want %d", len(sums), len(wantFiles))
	}
	// Static binaries for the right machines.
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		f, err := elf.Open(filepath.Join(dist, "pgark-"+testVersion+"-linux-"+arch))
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != machine {
			t.Errorf("%s binary: machine %v", arch, f.Machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s binary is dynamically linked", arch)
			}
		}
		f.Close()
	}
	if got := run(t, "", nil, "dpkg-deb", "-f", filepath.Join(dist, "pgark_1.2.3~test_arm64.deb"), "Architecture"); strings.TrimSpace(got) != "arm64" {
		t.Errorf("arm64 .deb architecture %q", got)
	}

	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "--purge", "pgark").CombinedOutput(); err != nil {
			t.Errorf("cleanup: dpkg --purge pgark: %v\n%s", err, out)
		}
	})
	run(t, "", nil, "dpkg", "-i", filepath.Join(dist, hostDeb))

	out := run(t, "", nil, "/usr/bin/pgark", "version")
	if !strings.HasPrefix(out, "pgark "+testVersion+"\n") || !strings.Contains(out, runtime.GOOS+"/"+runtime.GOARCH) || strings.Contains(out, "unknown") {
		t.Errorf("pgark version of the installed package:\n%s", out)
	}
	checkInstalled(t)

	// Every unit, as systemd would load it (instance "i"), offline.
	units, err := filepath.Glob("/usr/lib/systemd/system/pgark-*")
	if err != nil || len(units) != 2*len(services)+1 {
		t.Fatalf("installed units: %q, %v", units, err)
	}
	for _, u := range units {
		cmd := exec.Command("systemd-analyze", "verify", "--man=no", u)
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}

	verifyDropIns(t)

	// Remove: the binary goes, the config stays.
	if err := os.WriteFile("/etc/pgark/pgark.conf", []byte("# edited by the DBA\nrepo = /srv/x\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	run(t, "", nil, "dpkg", "-r", "pgark")
	if _, err := os.Stat("/usr/bin/pgark"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after dpkg -r: /usr/bin/pgark: %v", err)
	}
	if b, err := os.ReadFile("/etc/pgark/pgark.conf"); err != nil || !strings.Contains(string(b), "edited by the DBA") {
		t.Errorf("after dpkg -r the edited config is gone: %v", err)
	}
	// Reinstall over the kept config: it is not replaced.
	run(t, "", nil, "dpkg", "-i", "--force-confold", filepath.Join(dist, hostDeb))
	if b, err := os.ReadFile("/etc/pgark/pgark.conf"); err != nil || !strings.Contains(string(b), "edited by the DBA") {
		t.Errorf("reinstalling replaced the edited config: %v", err)
	}
	// Purge: the config goes too.
	run(t, "", nil, "dpkg", "-P", "pgark")
	for _, p := range []string{"/usr/bin/pgark", "/etc/pgark/pgark.conf", "/usr/lib/systemd/system/pgark-backup@.service"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after dpkg -P: %s: %v", p, err)
		}
	}

	// The .rpm's file list, read without rpm.
	for arch, rpmArch := range map[string]string{"amd64": "x86_64", "arm64": "aarch64"} {
		name, gotArch, files, err := readRPM(filepath.Join(dist, "pgark-1.2.3~test-1."+rpmArch+".rpm"))
		if err != nil {
			t.Fatal(err)
		}
		if name != "pgark" || gotArch != rpmArch {
			t.Errorf("%s rpm: name %q, arch %q", arch, name, gotArch)
		}
		byPath := map[string]rpmFile{}
		for _, f := range files {
			byPath[f.Path] = f
		}
		for _, p := range append(packagedFiles(), "/usr/share/zsh/site-functions/_pgark") {
			if _, ok := byPath[p]; !ok {
				t.Errorf("%s rpm lacks %s", arch, p)
			}
		}
		if f := byPath["/usr/bin/pgark"]; f.Mode&0o7777 != 0o755 || f.User != "root" {
			t.Errorf("%s rpm: /usr/bin/pgark mode %o owner %s", arch, f.Mode, f.User)
		}
		if f := byPath["/etc/pgark/pgark.conf"]; f.Mode&0o7777 != 0o640 || f.Flags&(rpmFileConfig|rpmFileNoReplace) != rpmFileConfig|rpmFileNoReplace {
			t.Errorf("%s rpm: /etc/pgark/pgark.conf mode %o flags %#x, want 0640, %%config(noreplace)", arch, f.Mode, f.Flags)
		}
	}
}

// packagedFiles are files that both packages install.
func packagedFiles() []string {
	f := []string{
		"/usr/bin/pgark", "/etc/pgark/pgark.conf",
		"/usr/share/man/man1/pgark.1.gz", "/usr/share/man/man1/pgark-backup.1.gz",
		"/usr/share/bash-completion/completions/pgark", "/usr/share/fish/vendor_completions.d/pgark.fish",
		"/usr/share/doc/pgark/examples/cron.d/pgark", "/usr/lib/systemd/system/pgark-failure@.service",
	}
	for _, s := range services {
		f = append(f, "/usr/lib/systemd/system/pgark-"+s.name+"@.service", "/usr/lib/systemd/system/pgark-"+s.name+"@.timer")
	}
	return f
}

// checkInstalled checks the files the .deb installed, their modes and owners.
func checkInstalled(t *testing.T) {
	t.Helper()
	for _, p := range append(packagedFiles(), "/usr/share/zsh/vendor-completions/_pgark") {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("installed package: %v", err)
		}
	}
	wantGroup := "root"
	if _, err := user.LookupGroup("postgres"); err == nil {
		wantGroup = "postgres" // postinstall gave it to the postgres group
	}
	for p, want := range map[string]struct {
		mode  fs.FileMode
		group string
	}{
		"/usr/bin/pgark":                                {0o755, "root"},
		"/etc/pgark/pgark.conf":                         {0o640, wantGroup},
		"/usr/lib/systemd/system/pgark-backup@.service": {0o644, "root"},
	} {
		fi, err := os.Stat(p)
		if err != nil {
			continue // reported above
		}
		st := fi.Sys().(*syscall.Stat_t)
		g, err := user.LookupGroupId(fmt.Sprint(st.Gid))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want.mode || st.Uid != 0 || g.Name != want.group {
			t.Errorf("%s: mode %o uid %d group %s, want %o root:%s", p, fi.Mode().Perm(), st.Uid, g.Name, want.mode, want.group)
		}
	}
	// The man pages carry the release's version.
	zr, err := gzip.NewReader(bytes.NewReader(readFile(t, "/usr/share/man/man1/pgark.1.gz")))
	if err != nil {
		t.Fatal(err)
	}
	man, err := io.ReadAll(zr)
	if err != nil || !strings.Contains(string(man), `"pgark `+strings.ReplaceAll(testVersion, "-", `\-`)+`"`) {
		t.Errorf("pgark(1) lacks the version %s (%v): %.200s", testVersion, err, man)
	}
	if b := readFile(t, "/etc/pgark/pgark.conf"); !bytes.Equal(b, readFile(t, "pgark.conf.example")) {
		t.Error("/etc/pgark/pgark.conf is not packaging/pgark.conf.example")
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verifyDropIns runs systemd-analyze verify on installed units with the
// drop-ins that the Scheduling chapter documents, found through
// SYSTEMD_UNIT_PATH (nothing is written under /etc): they must load without
// a complaint. A drop-in with an unknown key proves that they are read.
func verifyDropIns(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	write := func(p, body string) {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pgark-.service.d/paths.conf", "[Service]\nReadWritePaths=/srv/pgark\n")
	write("pgark-.service.d/after.conf", "[Unit]\nAfter=postgresql-15.service\n")
	write("pgark-failure@.service.d/override.conf", "[Service]\nExecStart=\nExecStart=/bin/echo \"%i failed on %H\"\n")
	write("pgark-backup@.timer.d/override.conf", "[Timer]\nOnCalendar=\nOnCalendar=Sat *-*-* 22:00:00\n")
	// The alternative to the copy timer: each backup ends with a copy.
	write("pgark-backup@.service.d/copy.conf", "[Service]\nExecStartPost=/usr/bin/pgark copy --config /etc/pgark/%i.conf --lock-wait 1h\n")
	verify := func(units ...string) string {
		cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, units...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%v: %s", err, out)
		}
		return string(bytes.TrimSpace(out))
	}
	units := []string{"pgark-backup@main.service", "pgark-backup@main.timer", "pgark-check@main.service", "pgark-copy@main.service", "pgark-copy@main.timer", "pgark-failure@pgark-backup@main.service.service"}
	if out := verify(units...); out != "" {
		t.Errorf("systemd-analyze verify with the documented drop-ins: %s", out)
	}
	write("pgark-.service.d/zz-bogus.conf", "[Service]\nBogusKey=1\n")
	if out := verify("pgark-check@main.service"); !strings.Contains(out, "BogusKey") {
		t.Errorf("a drop-in with an unknown key passed systemd-analyze verify: the drop-ins are not read (%q)", out)
	}
}
