package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/pgark/pgark/storage"
)

// oneObject is a store that serves r under every key (Get only); it counts
// the bytes read from it.
type oneObject struct {
	r    io.Reader
	read int64
}

func (o *oneObject) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.read += int64(n)
	return n, err
}

func (o *oneObject) Get(_ context.Context, key string) (io.ReadCloser, storage.ObjectInfo, error) {
	if o.r == nil {
		return nil, storage.ObjectInfo{}, storage.ErrNotFound
	}
	return io.NopCloser(o), storage.ObjectInfo{Key: key}, nil
}
func (o *oneObject) Put(context.Context, string, io.Reader, storage.PutOptions) error {
	return errors.New("read-only")
}
func (o *oneObject) GetRange(context.Context, string, int64, int64) (io.ReadCloser, error) {
	return nil, errors.New("not here")
}
func (o *oneObject) Stat(context.Context, string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, errors.New("not here")
}
func (o *oneObject) List(context.Context, string, func(storage.ObjectInfo) error) error {
	return errors.New("not here")
}
func (o *oneObject) ReadSmall(_ context.Context, key string, limit int64) ([]byte, string, error) {
	if o.r == nil {
		return nil, "", storage.ErrNotFound
	}
	// As the real stores do: never more than limit+1 bytes read.
	b, err := io.ReadAll(io.LimitReader(o, limit+1))
	if err != nil {
		return nil, "", err
	}
	if int64(len(b)) > limit {
		return nil, "", fmt.Errorf("%s: %w", key, storage.ErrTooLarge)
	}
	return b, "v1", nil
}
func (o *oneObject) Swap(context.Context, string, []byte, string) (string, error) {
	return "", errors.New("read-only")
}
func (o *oneObject) Delete(context.Context, string) error { return errors.New("not here") }
func (o *oneObject) String() string                       { return "test store" }

// endless yields c forever.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

func TestReadJSONHostile(t *testing.T) {
	ctx := context.Background()
	good := `{"format": 1, "created": "2026-11-24T15:45:00Z", "compression": "zstd", "compression_level": 3, "encryption": "none", "write_mode": "link"}`
	if _, err := Open(ctx, &oneObject{r: strings.NewReader(good)}); err != nil {
		t.Fatalf("a good pgark.json: %v", err)
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty", "", "damaged"},
		{"truncated", good[:40], "damaged"},
		{"wrong type", strings.Replace(good, `"format": 1`, `"format": "1"`, 1), "damaged"},
		{"array", `[1, 2]`, "damaged"},
		{"null", `null`, "format 0"},
		{"number", `1e400`, "damaged"},
		{"other format", strings.Replace(good, `"format": 1`, `"format": 2`, 1), "format 2"},
		{"unknown encryption", strings.Replace(good, `"none"`, `"rot13"`, 1), "unknown encryption"},
		{"oversized", good + strings.Repeat(" ", maxSmallObject), "larger than"},
		{"binary", "\x00\xff\xfe", "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(ctx, &oneObject{r: strings.NewReader(tc.body)})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line about %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), ConfigKey) {
				t.Errorf("the error does not name %s: %v", ConfigKey, err)
			}
		})
	}
	// An endless object (say, /dev/zero behind a symlink, or a hostile
	// server): read is bounded, not slurped.
	for _, key := range []string{ConfigKey, ClusterKey, "backups/20261124T154500Z/backup.json"} {
		o := &oneObject{r: endless(' ')}
		var v map[string]any
		err := ReadJSON(ctx, o, key, &v)
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("%s: endless object: %v", key, err)
		}
		if o.read > 2*maxSmallObject {
			t.Fatalf("%s: read %d bytes of an endless object", key, o.read)
		}
	}
	// cluster.json, wrongly typed: an error, never a binding.
	r := &Repo{Store: &oneObject{r: strings.NewReader(`{"system_identifier": 7, "wal_segment_size": 16777216}`)}}
	if _, ok, err := r.Cluster(ctx); err == nil || ok {
		t.Fatalf("a numeric system identifier (the format has a string) was accepted: %v %v", ok, err)
	}
}

func FuzzRepoJSON(f *testing.F) {
	f.Add([]byte(`{"format": 1, "created": "2026-11-24T15:45:00Z", "compression": "zstd", "compression_level": 3, "encryption": "age", "recipients": ["ab12"], "write_mode": "link"}`))
	f.Add([]byte(`{"system_identifier": "7360000000000000000", "wal_segment_size": 16777216, "bound_at": "x", "bound_by": "init"}`))
	f.Add([]byte(`{"format": 1, "encryption": "none"}`))
	f.Add([]byte(`{"system_identifier": 7}`))
	f.Add([]byte(`{"format": 1e3}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		r, err := Open(ctx, &oneObject{r: bytes.NewReader(b)})
		if err == nil {
			if r.Config.Format != FormatVersion || (r.Config.Encryption != "age" && r.Config.Encryption != "none") {
				t.Fatalf("accepted config %+v", r.Config)
			}
			if r.Config.Encrypted() != (r.Config.Encryption == "age") {
				t.Fatal("Encrypted disagrees with Encryption")
			}
			// Round trip through PutJSON's encoding.
			out, err := json.MarshalIndent(r.Config, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			r2, err := Open(ctx, &oneObject{r: bytes.NewReader(out)})
			if err != nil {
				t.Fatalf("written back, the config is refused: %v", err)
			}
			if out2, _ := json.MarshalIndent(r2.Config, "", "  "); !bytes.Equal(out, out2) {
				t.Fatalf("round trip:\n%s\n%s", out, out2)
			}
		} else if strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error %q", err)
		}
		rr := &Repo{Store: &oneObject{r: bytes.NewReader(b)}}
		c, ok, err := rr.Cluster(ctx)
		if err != nil || !ok {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var c2 Cluster
		if err := json.Unmarshal(out, &c2); err != nil || c2 != c {
			t.Fatalf("cluster round trip: %+v -> %s -> %+v (%v)", c, out, c2, err)
		}
	})
}
