package gcs

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

const (
	// DefaultReadTimeout is the default of Config.ReadTimeout.
	DefaultReadTimeout = 2 * time.Minute
	connectTimeout     = 10 * time.Second
)

// httpClient returns the client's HTTP client: connections that fail a read
// or a write after timeout of silence (a stalled server or network path),
// with credentials unless anonymous.
func httpClient(ctx context.Context, cfg Config, timeout time.Duration) (*http.Client, error) {
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
	if cfg.Anonymous || os.Getenv("STORAGE_EMULATOR_HOST") != "" {
		return &http.Client{Transport: base}, nil
	}
	opts := []option.ClientOption{
		option.WithScopes(gcs.ScopeFullControl, "https://www.googleapis.com/auth/cloud-platform"),
		option.WithTelemetryDisabled(),
	}
	if cfg.CredentialsFile != "" {
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, cfg.CredentialsFile))
	}
	rt, err := htransport.NewTransport(ctx, base, opts...)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	return &http.Client{Transport: rt}, nil
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
