// Package repo is the repository layer above a storage.Store: the config
// object written by `pgark init`, the binding to one PostgreSQL cluster, and
// the object format (compression and encryption recorded in each object).
package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgark/pgark/crypto"
	"github.com/pgark/pgark/storage"
)

// Keys of the repository's own objects.
const (
	ConfigKey  = "pgark.json"
	ClusterKey = "cluster.json"
)

// FormatVersion is the repository format this pgark writes and reads.
const FormatVersion = 1

// Conditional-write modes recorded at init.
const (
	WriteIfNoneMatch = "if-none-match" // S3 conditional writes (412 on an existing key)
	WriteHeadThenPut = "head-then-put" // documented fallback for stores without them (racy)
	WriteLink        = "link"          // local directory: link(2) of an fsynced temp file
	WriteGeneration  = "generation"    // GCS: generation preconditions (ifGenerationMatch=0 on create)
)

// Config is the repository's config object. It is written once, by init.
type Config struct {
	Format      int       `json:"format"`
	Created     time.Time `json:"created"`
	Compression string    `json:"compression"`
	Level       int       `json:"compression_level"`
	// Encryption is "age" or "none". An "age" repository refuses
	// unencrypted writes and reads.
	Encryption string `json:"encryption"`
	// Recipients are fingerprints of the age recipients registered at init
	// and by `pgark key add`, less those removed by `pgark key remove`.
	Recipients []string `json:"recipients,omitempty"`
	// RecipientChanges records every addition and removal since init.
	RecipientChanges []RecipientChange `json:"recipient_changes,omitempty"`
	WriteMode        string            `json:"write_mode"`
	CreatedByPgark   string            `json:"created_by"`
	SystemID         string            `json:"system_identifier,omitempty"` // informational; the binding is ClusterKey
	WalSegmentBytes  uint32            `json:"wal_segment_size,omitempty"`
	// ObjectLock is the S3 Object Lock retention every write carries (nil:
	// none). See objectlock.go.
	ObjectLock *ObjectLock `json:"object_lock,omitempty"`
}

// RecipientChange is one addition or removal of a registered recipient.
type RecipientChange struct {
	Action      string    `json:"action"` // "add" or "remove"
	Fingerprint string    `json:"fingerprint"`
	Recipient   string    `json:"recipient,omitempty"` // the public key, when given
	At          time.Time `json:"at"`
	Pgark       string    `json:"pgark_version,omitempty"`
}

// Removed reports when fingerprint was last removed, if it is not
// registered again since.
func (c *Config) Removed(fp string) (time.Time, bool) {
	if slices.Contains(c.Recipients, fp) {
		return time.Time{}, false
	}
	for i := len(c.RecipientChanges) - 1; i >= 0; i-- {
		if ch := c.RecipientChanges[i]; ch.Fingerprint == fp && ch.Action == "remove" {
			return ch.At, true
		}
	}
	return time.Time{}, false
}

// Encrypted reports whether the repository requires age encryption.
func (c *Config) Encrypted() bool { return c.Encryption == "age" }

// Cluster binds a repository to one PostgreSQL cluster. It is written once,
// create-only, at init (from PGDATA or a connection) or by the first push.
type Cluster struct {
	SystemID        uint64 `json:"system_identifier,string"`
	WalSegmentBytes uint32 `json:"wal_segment_size"`
	BoundAt         string `json:"bound_at"`
	BoundBy         string `json:"bound_by"`
}

// ErrNoRepository means the location holds no pgark repository.
var ErrNoRepository = errors.New("no pgark repository")

// ErrDamaged is wrapped when a repository's metadata object (pgark.json,
// cluster.json, backup.json) is not what pgark writes: truncated, oversized,
// not JSON or wrongly typed JSON, or inconsistent.
var ErrDamaged = errors.New("damaged")

// ErrWrongCluster is wrapped when WAL of another cluster meets a repository.
var ErrWrongCluster = errors.New("WAL from another cluster")

// Repo is an open repository.
type Repo struct {
	Store  storage.Store
	Config Config
	// Trust, when set, is the set of signers whose objects are accepted:
	// reads refuse unsigned objects and foreign signatures.
	Trust *crypto.Trusted

	// bound caches the cluster binding once read or written: it is
	// create-only, so it never changes (push-ahead checks it for every
	// segment of a batch).
	mu    sync.Mutex
	bound *Cluster
}

// maxSmallObject bounds the size of config and metadata objects read whole.
const maxSmallObject = 1 << 20

// ReadJSON reads a small JSON object (bounded in size) into v.
func ReadJSON(ctx context.Context, s storage.Store, key string, v any) error {
	// ReadSmall reads the body inside the store operation, so that the
	// retry decorator retries a body cut short, not only the request.
	b, _, err := s.ReadSmall(ctx, key, maxSmallObject)
	if err != nil {
		if storage.IsNotFound(err) {
			return err
		}
		if errors.Is(err, storage.ErrTooLarge) {
			return fmt.Errorf("%s in %s is %w: larger than %d bytes, not a pgark object", key, s, ErrDamaged, maxSmallObject)
		}
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s in %s is %w: %w", key, s, ErrDamaged, err)
	}
	return nil
}

// PutJSON writes a small JSON object create-only.
func PutJSON(ctx context.Context, s storage.Store, key string, v any) error {
	return PutSignedJSON(ctx, s, key, v, nil)
}

// PutSignedJSON writes a small JSON object create-only, with its plaintext
// SHA-256 and size in its metadata and, with a signer, their signature.
func PutSignedJSON(ctx context.Context, s storage.Store, key string, v any, signer *crypto.Signer) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	sum := sha256.Sum256(b)
	meta := map[string]string{storage.MetaSHA256: hex.EncodeToString(sum[:]), storage.MetaSize: strconv.Itoa(len(b))}
	if signer != nil {
		meta[storage.MetaSigner], meta[storage.MetaSignature] = signer.Sign(key, meta[storage.MetaSHA256], int64(len(b)))
	}
	return s.Put(ctx, key, bytes.NewReader(b), storage.PutOptions{Size: int64(len(b)), Meta: meta})
}

// VerifyJSONSignature checks, when the repository has trusted signers,
// that the small plaintext object key is signed by one of them and is what
// was signed.
func (r *Repo) VerifyJSONSignature(ctx context.Context, key string) error {
	if r.Trust == nil {
		return nil
	}
	rc, info, err := r.Store.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSmallObject+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	sum := sha256.Sum256(b)
	return r.Trust.Verify(key, hex.EncodeToString(sum[:]), int64(len(b)), info.Meta[storage.MetaSigner], info.Meta[storage.MetaSignature])
}

// InitOptions are the settings recorded by init.
type InitOptions struct {
	Compression string
	Level       int
	Recipients  *crypto.Recipients // nil or empty: unencrypted repository
	WriteMode   string
	Version     string // pgark version
	ObjectLock  *ObjectLock
}

// Init writes the config object of a new repository. The caller checks that
// the location is empty first; the create-only write refuses an existing one.
func Init(ctx context.Context, s storage.Store, o InitOptions) (*Config, error) {
	if err := ValidateCompression(o.Compression, o.Level); err != nil {
		return nil, err
	}
	c := &Config{
		Format:         FormatVersion,
		Created:        time.Now().UTC().Truncate(time.Second),
		Compression:    o.Compression,
		Level:          o.Level,
		Encryption:     "none",
		WriteMode:      o.WriteMode,
		CreatedByPgark: o.Version,
		ObjectLock:     o.ObjectLock,
	}
	if err := o.ObjectLock.Validate(); err != nil {
		return nil, err
	}
	if o.Recipients.Len() > 0 {
		c.Encryption = "age"
		c.Recipients = o.Recipients.Fingerprints()
		for i, fp := range c.Recipients {
			c.RecipientChanges = append(c.RecipientChanges, RecipientChange{Action: "add", Fingerprint: fp,
				Recipient: o.Recipients.Strings()[i], At: c.Created, Pgark: o.Version})
		}
	}
	if err := PutJSON(ctx, s, ConfigKey, c); err != nil {
		if storage.IsExists(err) {
			return nil, fmt.Errorf("%s already holds a pgark repository", s)
		}
		return nil, fmt.Errorf("write %s: %w", ConfigKey, err)
	}
	return c, nil
}

// NewRunID returns the id of a backup or dump run that starts at t:
// sortable, UTC, second precision (20261124T154500Z).
func NewRunID(t time.Time) string { return t.UTC().Format(runIDLayout) }

// ValidRunID reports whether s is a well-formed run id (it becomes part of
// object keys and file names, so nothing else is accepted).
func ValidRunID(s string) bool {
	_, err := time.Parse(runIDLayout, s)
	return err == nil && len(s) == len(runIDLayout) && !strings.ContainsAny(s, "/.")
}

const runIDLayout = "20060102T150405Z"

// maxConfigSwaps bounds the retries of UpdateConfig under concurrent updates.
const maxConfigSwaps = 50

// UpdateConfig changes the config object by compare-and-swap: it reads the
// config, applies fn, and writes it back only if nobody changed it
// meanwhile (else it starts over). fn may be called more than once.
func UpdateConfig(ctx context.Context, s storage.Store, fn func(*Config) error) (*Config, error) {
	for i := 0; i < maxConfigSwaps; i++ {
		raw, version, err := s.ReadSmall(ctx, ConfigKey, maxSmallObject)
		if storage.IsNotFound(err) {
			return nil, fmt.Errorf("%w at %s (no %s)", ErrNoRepository, s, ConfigKey)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", ConfigKey, err)
		}
		if version == "" {
			return nil, fmt.Errorf("update %s in %s: %w", ConfigKey, s, storage.ErrNoVersion)
		}
		var c Config
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("%s in %s is damaged: %w", ConfigKey, s, err)
		}
		if c.Format != FormatVersion {
			return nil, fmt.Errorf("repository %s has format %d; this pgark writes format %d", s, c.Format, FormatVersion)
		}
		if err := fn(&c); err != nil {
			return nil, err
		}
		b, err := json.MarshalIndent(&c, "", "  ")
		if err != nil {
			return nil, err
		}
		_, err = s.Swap(ctx, ConfigKey, append(b, '\n'), version)
		if err == nil {
			return &c, nil
		}
		if !errors.Is(err, storage.ErrChanged) {
			return nil, fmt.Errorf("write %s: %w", ConfigKey, err)
		}
		// Someone else updated it: read again, after a jittered pause so
		// that contending writers spread out.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(i+1) * int64(5*time.Millisecond))))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	return nil, fmt.Errorf("write %s: it kept changing under concurrent updates; try again", ConfigKey)
}

// Open reads the repository's config object. A location without one fails
// with ErrNoRepository: pgark never starts a new archive implicitly.
func Open(ctx context.Context, s storage.Store) (*Repo, error) {
	var c Config
	if err := ReadJSON(ctx, s, ConfigKey, &c); err != nil {
		if storage.IsNotFound(err) {
			return nil, fmt.Errorf("%w at %s (no %s): check the repository path, or create one with `pgark init`", ErrNoRepository, s, ConfigKey)
		}
		return nil, fmt.Errorf("open repository %s: %w", s, err)
	}
	if c.Format != FormatVersion {
		return nil, fmt.Errorf("repository %s: %s has format %d; this pgark reads format %d", s, ConfigKey, c.Format, FormatVersion)
	}
	if c.Encryption != "age" && c.Encryption != "none" {
		return nil, fmt.Errorf("repository %s: unknown encryption %q in %s", s, c.Encryption, ConfigKey)
	}
	if err := c.ObjectLock.Validate(); err != nil {
		return nil, fmt.Errorf("repository %s: %s: %w", s, ConfigKey, err)
	}
	return &Repo{Store: s, Config: c}, nil
}

// CheckRecipients enforces the repository's encryption on a writer: an
// encrypted repository refuses a write without recipients (fail closed), and
// at least one recipient must be one registered at init, so that what is
// written stays readable with a key the repository's owner holds. It returns
// the fingerprints of recipients that are not registered (worth a warning).
func (r *Repo) CheckRecipients(rs *crypto.Recipients) (unregistered []string, err error) {
	if !r.Config.Encrypted() {
		if rs.Len() > 0 {
			return nil, fmt.Errorf("repository %s was created without encryption, but age recipients are configured: refusing to mix (create an encrypted repository with `pgark init` and recipients)", r.Store)
		}
		return nil, nil
	}
	if rs.Len() == 0 {
		return nil, fmt.Errorf("repository %s is encrypted but no age recipients are configured (set --age-recipients, PGARK_AGE_RECIPIENTS or --age-recipients-file): refusing to write unencrypted data", r.Store)
	}
	known := false
	for _, fp := range rs.Fingerprints() {
		if at, ok := r.Config.Removed(fp); ok {
			return nil, fmt.Errorf("age recipient %s was removed from repository %s on %s (pgark key remove): refusing to encrypt new data to it; update age-recipients on this host",
				fp, r.Store, at.UTC().Format(time.RFC3339))
		}
		if slices.Contains(r.Config.Recipients, fp) {
			known = true
		} else {
			unregistered = append(unregistered, fp)
		}
	}
	if !known {
		return nil, fmt.Errorf("the configured age recipients are not registered in repository %s (registered: %v): refusing to write data that its owner's keys may not decrypt", r.Store, r.Config.Recipients)
	}
	return unregistered, nil
}

// Cluster returns the cluster binding, or ok=false when none is recorded yet.
func (r *Repo) Cluster(ctx context.Context) (c Cluster, ok bool, err error) {
	err = ReadJSON(ctx, r.Store, ClusterKey, &c)
	if storage.IsNotFound(err) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("read cluster binding: %w", err)
	}
	return c, true, nil
}

// BindCluster checks that sysid and segSize belong to the repository's
// cluster, binding the repository to them (create-only) if it is not bound
// yet.
func (r *Repo) BindCluster(ctx context.Context, sysid uint64, segSize uint32, by string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var c Cluster
	ok := r.bound != nil
	if ok {
		c = *r.bound
	} else {
		var err error
		if c, ok, err = r.Cluster(ctx); err != nil {
			return err
		}
	}
	if !ok {
		c = Cluster{SystemID: sysid, WalSegmentBytes: segSize, BoundAt: time.Now().UTC().Format(time.RFC3339), BoundBy: by}
		err := PutJSON(ctx, r.Store, ClusterKey, &c)
		if err == nil {
			r.bound = &c
			return nil
		}
		if !storage.IsExists(err) {
			return fmt.Errorf("record cluster binding: %w", err)
		}
		// A concurrent first push bound it: compare with theirs.
		if c, ok, err = r.Cluster(ctx); err != nil || !ok {
			return fmt.Errorf("read cluster binding after a concurrent write: %v", err)
		}
	}
	if c.SystemID != sysid {
		return fmt.Errorf("%w: its system identifier is %d but repository %s belongs to cluster %d. Likely causes: the wrong repository is configured for this server, or the cluster was re-created or upgraded with pg_upgrade (which gives a new system identifier). Fix: point this server at its own repository, or after a pg_upgrade create a new one with `pgark init` and take a new base backup",
			ErrWrongCluster, sysid, r.Store, c.SystemID)
	}
	if c.WalSegmentBytes != segSize {
		return fmt.Errorf("%w: its WAL segment size is %d bytes but repository %s holds segments of %d bytes", ErrWrongCluster, segSize, r.Store, c.WalSegmentBytes)
	}
	r.bound = &c
	return nil
}
