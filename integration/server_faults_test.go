package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgark/pgark/internal/faultproxy"
)

// slowBackup starts a rate-limited backup in the background.
func slowBackup(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	return startPgark(t, env, append([]string{"backup", "--max-rate", "1MiB"}, args...)...)
}

// wantFailedBackup waits for a backup to fail with one clear error line
// that holds want, and checks that list shows nothing new as usable.
func wantFailedBackup(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer, want string, a *archiveSetup, usable int) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("the backup survived: %s", stderr)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the backup hangs: %s", stderr)
	}
	if code := cmd.ProcessState.ExitCode(); code < 1 || code > 125 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := strings.Count(stderr.String(), "level=ERROR"); n != 1 || !strings.Contains(stderr.String(), want) {
		t.Fatalf("want one error line containing %q:\n%s", want, stderr)
	}
	if backups, _ := listJSONOf(t, nil, a.localConf); len(backups) != usable {
		t.Fatalf("%d usable backups listed, want %d: %v", len(backups), usable, backups)
	}
}

// TestBackupServerFaults: the server restarted during a backup, the TCP
// stream stalled, and max_wal_senders exhausted: each gives one clear error,
// no usable-looking backup, and the next backup succeeds. (The walsender
// terminated mid-stream: TestBackupKilledMidway.)
func TestBackupServerFaults(t *testing.T) {
	a := setupArchiving(t, 16, 0)
	c := a.c
	c.Pgbench(t, "-i", "-s", "5", "-q")
	walsenders := func() string {
		return c.QueryRow(t, "SELECT count(*)::text FROM pg_stat_activity WHERE backend_type = 'walsender'")
	}

	// A restart of PostgreSQL during the backup.
	cmd, stderr := slowBackup(t, nil, "--config", a.localConf, "--dsn", c.DSN())
	c.WaitFor(t, time.Minute, func() bool { return walsenders() != "0" })
	time.Sleep(time.Second)
	c.Stop(t)
	c.Start(t)
	wantFailedBackup(t, cmd, stderr, "BASE_BACKUP", a, 0)

	// The TCP stream stalls mid-way (a hung network path): --stream-timeout.
	proxy := faultproxy.StartTCP(t, fmt.Sprintf("%s:%d", c.Host, c.Port))
	viaProxy := strings.Replace(c.DSN(), fmt.Sprintf("%s:%d", c.Host, c.Port), proxy.Addr, 1)
	cmd, stderr = slowBackup(t, nil, "--config", a.localConf, "--dsn", viaProxy, "--stream-timeout", "3s")
	deadline := time.Now().Add(time.Minute)
	for proxy.BytesDown() < 4<<20 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	proxy.Stall(true)
	start := time.Now()
	wantFailedBackup(t, cmd, stderr, "the connection stalled", a, 0)
	if d := time.Since(start); d > time.Minute {
		t.Errorf("the stall was noticed after %s (stream-timeout 3s)", d)
	}
	proxy.Stall(false)

	// max_wal_senders exhausted: every slot taken by other replication
	// connections.
	c.SetConf(map[string]string{"max_wal_senders": "2"})
	c.Stop(t)
	c.Start(t)
	var held []*pgconn.PgConn
	for i := 0; i < 2; i++ {
		conn, err := pgconn.Connect(context.Background(), c.ReplicationDSN())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	r := pgark(t, nil, "backup", "--config", a.localConf, "--dsn", c.DSN())
	wantCode(t, r, 5, "max_wal_senders")
	if backups, _ := listJSONOf(t, nil, a.localConf); len(backups) != 0 {
		t.Fatalf("a refused backup is listed: %v", backups)
	}
	for _, conn := range held {
		conn.Close(context.Background())
	}

	// Everything healed: the next backup succeeds.
	mustOK(t, pgark(t, nil, "backup", "--config", a.localConf, "--dsn", c.DSN()))
	if backups, _ := listJSONOf(t, nil, a.localConf); len(backups) != 1 {
		t.Fatalf("after the faults: %v", backups)
	}
	runVerify(t, a.localConf, 0)
}
