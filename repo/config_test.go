package repo

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/pgark/pgark/storage/local"
)

// TestUpdateConfigNoLostUpdate: concurrent updates of the config object all
// land (compare-and-swap, retried), and Removed reports removals.
func TestUpdateConfigNoLostUpdate(t *testing.T) {
	ctx := context.Background()
	s, err := local.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := keys(t)
	if _, err := Init(ctx, s, InitOptions{Compression: "zstd", Level: 3, Recipients: rs, WriteMode: WriteLink}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				fp := fmt.Sprintf("age-x25519:w%di%d", w, i)
				if _, err := UpdateConfig(ctx, s, func(c *Config) error {
					c.Recipients = append(c.Recipients, fp)
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	r, err := Open(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r.Config.Recipients); n != 21 {
		t.Fatalf("%d recipients after 20 concurrent additions to 1, want 21: %v", n, r.Config.Recipients)
	}
	first := r.Config.Recipients[0]
	if _, err := UpdateConfig(ctx, s, func(c *Config) error {
		c.Recipients = slices.DeleteFunc(c.Recipients, func(fp string) bool { return fp == first })
		c.RecipientChanges = append(c.RecipientChanges, RecipientChange{Action: "remove", Fingerprint: first})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, _ = Open(ctx, s)
	if _, ok := r.Config.Removed(first); !ok {
		t.Fatal("Removed does not report a removed recipient")
	}
	if _, err := r.CheckRecipients(rs); err == nil {
		t.Fatal("a removed recipient may still be written to")
	}
}
