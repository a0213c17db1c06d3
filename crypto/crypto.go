// Package crypto wraps age (X25519) for pgark: generating identities, loading
// recipients and identities, fingerprints, and encrypting and decrypting
// streams. Database hosts hold only public recipients; the private identity is
// needed only to fetch and restore.
package crypto

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
)

// GenerateIdentity writes a new X25519 identity to path (mode 0600, created
// exclusively: an existing file is never overwritten) and returns its public
// recipient.
func GenerateIdentity(path string) (string, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fmt.Errorf("generate identity: %w", err)
	}
	recip := id.Recipient().String()
	content := fmt.Sprintf("# created by pgark: %s\n# public key: %s\n%s\n",
		time.Now().UTC().Format(time.RFC3339), recip, id.String())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("%s already exists: refusing to overwrite a key file", path)
		}
		return "", fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("sync key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("close key file %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return recip, nil
}

// Recipients is a set of public keys objects are encrypted to.
type Recipients struct {
	list []age.Recipient
	strs []string
}

// ParseRecipients parses age X25519 recipients ("age1..."), given as a
// comma- or whitespace-separated list and/or a file with one per line
// (comments with '#' allowed). Both may be empty, which yields an empty set.
func ParseRecipients(list, file string) (*Recipients, error) {
	fields := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read recipients file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			fields = append(fields, line)
		}
	}
	rs := &Recipients{}
	seen := map[string]bool{}
	for _, f := range fields {
		r, err := age.ParseX25519Recipient(f)
		if err != nil {
			if strings.HasPrefix(f, "AGE-SECRET-KEY-") {
				return nil, errors.New("a recipient list holds a secret key (AGE-SECRET-KEY-...): give the public recipient (age1...) instead, and keep the identity off the database host")
			}
			return nil, fmt.Errorf("malformed age recipient %q: expected an X25519 recipient starting with age1", shorten(f))
		}
		if seen[r.String()] {
			continue
		}
		seen[r.String()] = true
		rs.list = append(rs.list, r)
		rs.strs = append(rs.strs, r.String())
	}
	return rs, nil
}

func shorten(s string) string {
	if len(s) > 24 {
		return s[:12] + "..." + s[len(s)-6:]
	}
	return s
}

// Len is the number of recipients.
func (r *Recipients) Len() int {
	if r == nil {
		return 0
	}
	return len(r.list)
}

// Strings returns the recipients (age1...), in order.
func (r *Recipients) Strings() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.strs)
}

// Fingerprints returns each recipient's fingerprint, in order.
func (r *Recipients) Fingerprints() []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, s := range r.strs {
		out = append(out, Fingerprint(s))
	}
	return out
}

// Fingerprint is a short, stable identifier of a public recipient: not secret,
// safe to record in the repository and print.
func Fingerprint(recipient string) string {
	sum := sha256.Sum256([]byte(recipient))
	return "age-x25519:" + hex.EncodeToString(sum[:8])
}

// Encrypt returns a writer that encrypts to the recipients and writes the
// ciphertext to w. Close must be called to write the final chunk.
func (r *Recipients) Encrypt(w io.Writer) (io.WriteCloser, error) {
	if r.Len() == 0 {
		return nil, errors.New("no age recipients")
	}
	wc, err := age.Encrypt(w, r.list...)
	if err != nil {
		return nil, fmt.Errorf("age encrypt: %w", err)
	}
	return wc, nil
}

// Identities is a set of private keys used to decrypt.
type Identities struct {
	list []age.Identity
	file string
	fps  []string
}

// LoadIdentities reads an identity file, which may hold several identities
// (old ones are kept after a key rotation while objects encrypted to them are
// retained).
func LoadIdentities(file string) (*Identities, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open age identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		// age's parse errors never quote key material, but say where it came from.
		return nil, fmt.Errorf("read age identity file %s: %w", file, err)
	}
	out := &Identities{list: ids, file: file}
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			out.fps = append(out.fps, Fingerprint(x.Recipient().String()))
		}
	}
	return out, nil
}

// Fingerprints returns the fingerprints of the identities' public recipients.
func (ids *Identities) Fingerprints() []string { return ids.fps }

// ErrNoMatchingIdentity is wrapped when none of the identities can decrypt an
// object (it was encrypted to other keys).
var ErrNoMatchingIdentity = errors.New("no identity matches")

// ErrMissingIdentity is returned when an encrypted object is read without an
// identity file configured.
var ErrMissingIdentity = errors.New("the object is encrypted and no age identity file is configured (set --age-identity-file or PGARK_AGE_IDENTITY_FILE)")

// Decrypt returns a reader of the plaintext of an age stream. age
// authenticates every chunk and the end of the stream: a modified or truncated
// ciphertext makes a Read fail.
func (ids *Identities) Decrypt(r io.Reader) (io.Reader, error) {
	if ids == nil || len(ids.list) == 0 {
		return nil, ErrMissingIdentity
	}
	pr, err := age.Decrypt(r, ids.list...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("%w: none of the identities in %s can decrypt this object (it was encrypted to other keys)", ErrNoMatchingIdentity, ids.file)
		}
		return nil, fmt.Errorf("age decrypt: %w", err)
	}
	return pr, nil
}
