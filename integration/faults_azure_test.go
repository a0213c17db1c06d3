package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgark/pgark/internal/faultproxy"
	"github.com/pgark/pgark/internal/testenv"
	"github.com/pgark/pgark/storage/azure"
	"github.com/pgark/pgark/wal"
)

// TestFaultsArchiveAzure archives a pgbench load through the fault proxy
// in front of Azurite, failing 20% of the requests in mixed ways (500,
// 503, resets, cut bodies, stalls past azure-read-timeout, 403s). No
// segment is ever reported archived while missing from the container (read
// directly, not through the proxy); once the proxy heals and the archiver
// catches up, every segment PostgreSQL handed over is in the repository
// byte for byte, and verify passes.
func TestFaultsArchiveAzure(t *testing.T) {
	seconds := 20
	if v := os.Getenv("FAULT_SECONDS"); v != "" {
		fmt.Sscan(v, &seconds)
	}
	shared := testenv.SharedDir(t)
	srv := testenv.AzureStart(t)
	srv.CreateContainer(t, "faults")
	proxy := faultproxy.Start(t, srv.BaseURL())
	direct := []string{"AZURE_STORAGE_ACCOUNT=" + srv.Account, "AZURE_STORAGE_KEY=" + srv.Key}
	viaProxy := append(direct[:len(direct):len(direct)], "PGARK_AZURE_ENDPOINT="+proxy.URL+"/"+srv.Account)

	keyFile := filepath.Join(shared, "age-identity.txt")
	r := asPostgres(t, nil, "key", "generate", keyFile)
	if r.code != 0 {
		t.Fatal(r)
	}
	conf := writeConfig(t, shared, map[string]string{
		"repo":               "azure://faults/db",
		"azure-endpoint":     srv.Endpoint,
		"azure-read-timeout": "3s",
		"age-recipients":     strings.TrimSpace(r.stdout),
		"age-identity-file":  keyFile,
		"retry-timeout":      "2m",
	})
	if r := asPostgres(t, direct, "init", "--config", conf); r.code != 0 {
		t.Fatal(r)
	}
	copies := filepath.Join(shared, "copies")
	testenv.MkdirShared(t, copies)
	c := testenv.StartPG(t, testenv.PGOptions{
		Major: 16, WalSegSizeMB: 1, Env: viaProxy,
		Conf: map[string]string{
			"archive_mode":    "on",
			"archive_command": fmt.Sprintf("cp %%p %s/%%f && %s wal-push --config %s %%p", copies, pgarkBin, conf),
			"wal_keep_size":   "4GB", "max_wal_size": "4GB", "checkpoint_timeout": "1h",
		},
	})
	c.Pgbench(t, "-i", "-s", "5", "-q")
	mustOK(t, pgark(t, direct, "backup", "--config", conf, "--dsn", c.DSN()))

	st, err := azure.New(azure.Config{Container: "faults", Prefix: "db", Endpoint: srv.Endpoint, Account: srv.Account, AccountKey: srv.Key})
	if err != nil {
		t.Fatal(err)
	}
	count, stop := archivedWatcherFunc(t, c, func(ctx context.Context, key string) error {
		_, err := st.Stat(ctx, key)
		return err
	})
	proxy.Set(faultproxy.Faults{Rate: 0.2, Kinds: allFaults, Stall: 5 * time.Second})
	c.Pgbench(t, "-c", "2", "-j", "2", "-T", fmt.Sprint(seconds))
	for deadline := time.Now().Add(10 * time.Minute); count() < 5 && time.Now().Before(deadline); {
		c.Pgbench(t, "-c", "2", "-j", "2", "-T", "5")
	}
	archiveFaults := proxy.String()
	proxy.Set(faultproxy.Faults{})
	last := waitArchivedAll(t, c, 5*time.Minute)
	checked, missing := stop()
	stats := c.QueryRow(t, "SELECT archived_count||' archived, '||failed_count||' failed' FROM pg_stat_archiver")
	t.Logf("archive under faults: %s; pg_stat_archiver: %s; the watcher checked %d reports", archiveFaults, stats, checked)
	if len(missing) > 0 {
		t.Fatalf("segments reported archived while missing from the repository: %v", missing)
	}
	if checked < 5 {
		t.Fatalf("the watcher checked only %d archived segments", checked)
	}
	ents, err := os.ReadDir(copies)
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(shared, "spool")
	n := 0
	for _, e := range ents {
		name := e.Name()
		if _, err := wal.ParseName(name); err != nil || name > last && len(name) == 24 {
			continue
		}
		dest := filepath.Join(shared, "fetched")
		mustOK(t, pgark(t, append(direct, "PGARK_SPOOL_DIR="+spool), "wal-fetch", "--config", conf, "--pgdata", shared, name, dest))
		if !bytes.Equal(readFile(t, dest), readFile(t, filepath.Join(copies, name))) {
			t.Fatalf("%s in the repository differs from what PostgreSQL archived", name)
		}
		os.Remove(dest)
		n++
	}
	if n < 10 {
		t.Fatalf("only %d files archived during the fault run", n)
	}
	t.Logf("%d archived files compared byte for byte", n)
	mustOK(t, pgark(t, direct, "verify", "--config", conf))
}

// archivedWatcherFunc checks, while the archiver runs, that every segment
// that pg_stat_archiver reports archived is in the repository, with
// exists (a direct Stat of the object's key below the repository).
func archivedWatcherFunc(t *testing.T, c *testenv.Cluster, exists func(ctx context.Context, key string) error) (count func() int, stop func() (checked int, missing []string)) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		checked int
		missing []string
	)
	wg.Go(func() {
		last := ""
		for ctx.Err() == nil {
			name, err := c.QueryRowErr("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
			if err == nil && name != "" && name != last {
				last = name
				if n, perr := wal.ParseName(name); perr == nil {
					herr := exists(ctx, wal.ObjectKey(n))
					mu.Lock()
					checked++
					if herr != nil && ctx.Err() == nil {
						missing = append(missing, fmt.Sprintf("%s: %v", name, herr))
					}
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	count = func() int {
		mu.Lock()
		defer mu.Unlock()
		return checked
	}
	return count, func() (int, []string) {
		cancel()
		wg.Wait()
		return checked, missing
	}
}
