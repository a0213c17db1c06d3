package gcs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

const (
	// DefaultReadTimeout is the default of Config.ReadTimeout.
	DefaultReadTimeout = 2 * time.Minute
	connectTimeout     = 10 * time.Second
	// tokenTimeout bounds one token request (to Google's token endpoint or
	// the metadata server).
	tokenTimeout = 30 * time.Second
)

// scopes are the OAuth scopes of the access tokens: full control of
// objects (pgark reads, creates, replaces and deletes them); IAM decides
// what the account may really do.
var scopes = []string{"https://www.googleapis.com/auth/devstorage.full_control", "https://www.googleapis.com/auth/cloud-platform"}

// httpClient returns the store's HTTP client: connections that fail a read
// or a write after timeout of silence (a stalled server or network path),
// redirects not followed (a resumable upload answers 308), and an OAuth 2
// access token on every request unless anonymous.
func httpClient(ctx context.Context, cfg Config, anonymous bool, timeout time.Duration) (*http.Client, *http.Transport, error) {
	dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	base := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, timeout: timeout}, nil
		},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   connectTimeout,
		ExpectContinueTimeout: 2 * time.Second,
		IdleConnTimeout:       60 * time.Second,
		MaxIdleConnsPerHost:   32,
	}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if anonymous {
		return &http.Client{Transport: base, CheckRedirect: noRedirect}, base, nil
	}
	// Token requests outlive the context of New (the store's requests
	// refresh the token), and each is bounded by tokenTimeout.
	tctx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient,
		&http.Client{Transport: base, Timeout: tokenTimeout})
	var creds *google.Credentials
	var err error
	if cfg.CredentialsFile != "" {
		data, rerr := os.ReadFile(cfg.CredentialsFile)
		if rerr != nil {
			return nil, nil, fmt.Errorf("credentials: %w", rerr)
		}
		creds, err = google.CredentialsFromJSONWithType(tctx, data, google.ServiceAccount, scopes...)
		if err != nil {
			return nil, nil, fmt.Errorf("credentials: %s is not a usable service-account key: %w", cfg.CredentialsFile, err)
		}
	} else if creds, err = google.FindDefaultCredentials(tctx, scopes...); err != nil {
		return nil, nil, fmt.Errorf("credentials: %w", err)
	}
	if err := checkKey(creds.JSON); err != nil {
		if cfg.CredentialsFile != "" {
			return nil, nil, fmt.Errorf("credentials: %s: %w", cfg.CredentialsFile, err)
		}
		return nil, nil, fmt.Errorf("credentials: %w", err)
	}
	rt := &oauth2.Transport{Source: creds.TokenSource, Base: base}
	return &http.Client{Transport: rt, CheckRedirect: noRedirect}, base, nil
}

// checkKey parses the private key of a service-account key file, so that
// a broken key is an error here, not a token request that fails on every
// retry.
func checkKey(data []byte) error {
	var f struct {
		Type       string `json:"type"`
		PrivateKey string `json:"private_key"`
	}
	if len(data) == 0 || json.Unmarshal(data, &f) != nil || f.Type != string(google.ServiceAccount) {
		return nil // not a service-account key file
	}
	der := []byte(f.PrivateKey)
	if b, _ := pem.Decode(der); b != nil {
		der = b.Bytes
	}
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err != nil {
		return errors.New("the service-account key's private_key is not a PEM, PKCS #1 or PKCS #8 private key")
	}
	return nil
}

// tokenRefused reports whether the token endpoint refused the credentials
// (a 4xx other than 408 and 429: a revoked or malformed key), which no
// retry fixes. Other token failures, such as an unreachable metadata
// server, are retried.
func tokenRefused(err error) bool {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return false
	}
	sc := re.Response.StatusCode
	return sc >= 400 && sc < 500 && sc != http.StatusRequestTimeout && sc != http.StatusTooManyRequests
}

// idleConn fails a Read or a Write that makes no progress for timeout.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}
