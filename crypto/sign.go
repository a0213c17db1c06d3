package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Origin authentication. age proves nothing about who wrote an object:
// anyone with the public recipient can encrypt. A writer with a signing key
// signs what it stores (the object's key, the plaintext SHA-256 and size),
// and readers configured with trusted public keys refuse anything not
// signed by one of them, before a byte is written.

const (
	signingKeyPrefix = "PGARK-ED25519-SECRET-KEY-1:"
	publicKeyPrefix  = "pgark-ed25519:"
	sigContext       = "pgark object signature v1\x00"
)

// ErrBadSignature marks an object that is unsigned, or not signed by a
// trusted key, or whose signature does not match.
var ErrBadSignature = errors.New("origin signature check failed")

// Signer signs objects with an ed25519 key.
type Signer struct {
	key ed25519.PrivateKey
	pub string
}

// GenerateSigningKey writes a new ed25519 signing key to path (mode 0600,
// never overwriting) and returns its public key.
func GenerateSigningKey(path string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	pubText := publicKeyPrefix + base64.RawURLEncoding.EncodeToString(pub)
	body := fmt.Sprintf("# pgark signing key (ed25519); public key: %s\n%s%s\n",
		pubText, signingKeyPrefix, base64.RawURLEncoding.EncodeToString(priv.Seed()))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("%s already exists: refusing to overwrite a key", path)
		}
		return "", err
	}
	if _, err := f.WriteString(body); err != nil {
		f.Close()
		os.Remove(path)
		return "", err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", err
	}
	return pubText, nil
}

// LoadSigner reads a signing key file.
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, signingKeyPrefix) {
			continue
		}
		seed, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(line, signingKeyPrefix))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key file %s is malformed", path)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		pub := priv.Public().(ed25519.PublicKey)
		return &Signer{key: priv, pub: publicKeyPrefix + base64.RawURLEncoding.EncodeToString(pub)}, nil
	}
	return nil, fmt.Errorf("signing key file %s holds no %s... line (make one with `pgark key generate-signing`)", path, signingKeyPrefix)
}

// PublicKey is the signer's public key (pgark-ed25519:...).
func (s *Signer) PublicKey() string { return s.pub }

// signedMessage binds the signature to the object's key, so that a signed
// object cannot be replayed under another name.
func signedMessage(key, sha256hex string, size int64) []byte {
	return []byte(sigContext + key + "\x00" + sha256hex + "\x00" + strconv.FormatInt(size, 10))
}

// Sign returns the signer's key id and the signature of an object.
func (s *Signer) Sign(key, sha256hex string, size int64) (signer, signature string) {
	sig := ed25519.Sign(s.key, signedMessage(key, sha256hex, size))
	return keyID(s.key.Public().(ed25519.PublicKey)), base64.RawURLEncoding.EncodeToString(sig)
}

func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// Trusted is the set of public keys whose signatures a reader accepts.
type Trusted struct {
	keys map[string]ed25519.PublicKey // by key id
}

// ParseTrusted parses public keys (pgark-ed25519:...), comma- or
// space-separated. An empty list yields nil: no signature is required.
func ParseTrusted(list string) (*Trusted, error) {
	fields := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	if len(fields) == 0 {
		return nil, nil
	}
	t := &Trusted{keys: map[string]ed25519.PublicKey{}}
	for _, f := range fields {
		if strings.HasPrefix(f, signingKeyPrefix) {
			return nil, errors.New("a trusted-signers list holds a secret signing key: give the public key (pgark-ed25519:...) instead")
		}
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(f, publicKeyPrefix))
		if !strings.HasPrefix(f, publicKeyPrefix) || err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("malformed signing public key %q: expected pgark-ed25519:... as `pgark key generate-signing` prints", shorten(f))
		}
		t.keys[keyID(b)] = ed25519.PublicKey(b)
	}
	return t, nil
}

// Verify checks an object's signature. A nil Trusted accepts everything.
func (t *Trusted) Verify(key, sha256hex string, size int64, signer, signature string) error {
	if t == nil {
		return nil
	}
	if signer == "" || signature == "" {
		return fmt.Errorf("%w: %s is not signed (trusted-signers is set, so every object must be)", ErrBadSignature, key)
	}
	pub, ok := t.keys[signer]
	if !ok {
		return fmt.Errorf("%w: %s is signed by %s, which is not a trusted signer", ErrBadSignature, key, signer)
	}
	sig, err := base64.RawURLEncoding.DecodeString(signature)
	if err != nil || !ed25519.Verify(pub, signedMessage(key, sha256hex, size), sig) {
		return fmt.Errorf("%w: the signature of %s does not match its content", ErrBadSignature, key)
	}
	return nil
}
