// Package faultproxy is a fault-injecting HTTP reverse proxy for tests: it
// stands between pgark and the S3 test server on loopback and, for a share
// of the requests, answers with an error, resets the connection, stalls,
// truncates the response body, or adds latency.
//
// Requests are forwarded unchanged, including the Host header the client
// signed (SigV4 covers it). The faults are set at run time (Set), so a test
// can break the store for a while and then heal it.
package faultproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Kind is one kind of fault.
type Kind int

// The faults. Request faults never reach the server; response faults are
// applied to the server's real answer (the request took effect).
const (
	Err500        Kind = iota // 500 InternalError, not forwarded
	SlowDown                  // 503 SlowDown, not forwarded
	Forbidden                 // 403 AccessDenied, not forwarded
	ResetRequest              // the connection is reset before any answer, not forwarded
	ResetResponse             // forwarded; the connection is reset halfway through the response body
	Truncate                  // forwarded; the response body stops halfway, the connection closes
	Stall                     // the answer is held for Faults.Stall, then forwarded
	numKinds
)

var kindNames = [...]string{"500", "503-slowdown", "403", "reset-request", "reset-response", "truncate", "stall"}

func (k Kind) String() string { return kindNames[k] }

// Transient are the faults a correct client retries through.
var Transient = []Kind{Err500, SlowDown, ResetRequest, ResetResponse, Truncate}

// Faults configures the proxy.
type Faults struct {
	Rate    float64       // share of requests that get a fault, 0 to 1
	Kinds   []Kind        // the faults to choose from, uniformly
	Latency time.Duration // added to every request
	Stall   time.Duration // how long a Stall holds the answer
	// Methods, when set, limits faults to these HTTP methods.
	Methods []string
}

// Proxy is a running fault proxy.
type Proxy struct {
	URL string // http://127.0.0.1:PORT

	mu     sync.Mutex
	faults Faults
	rng    *rand.Rand

	requests atomic.Int64
	injected [numKinds]atomic.Int64
	rp       *httputil.ReverseProxy
	srv      *http.Server
}

// Start starts a proxy to target (the S3 server's base URL), stopped at the
// end of the test.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{URL: "http://" + l.Addr().String(), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DisableCompression = true
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: time.Minute}
	go p.srv.Serve(l)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

// Set replaces the faults; Set(Faults{}) heals the proxy.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.mu.Unlock()
}

// pick decides the fault for one request (-1: none) and the latency.
func (p *Proxy) pick(method string) (Kind, time.Duration, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.faults
	if len(f.Methods) > 0 && !containsFold(f.Methods, method) {
		return -1, f.Latency, 0
	}
	if len(f.Kinds) == 0 || f.Rate <= 0 || p.rng.Float64() >= f.Rate {
		return -1, f.Latency, 0
	}
	return f.Kinds[p.rng.IntN(len(f.Kinds))], f.Latency, f.Stall
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// Requests is the number of requests seen.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Injected counts the faults injected, by kind.
func (p *Proxy) Injected() map[string]int64 {
	out := map[string]int64{}
	for k := Kind(0); k < numKinds; k++ {
		if n := p.injected[k].Load(); n > 0 {
			out[k.String()] = n
		}
	}
	return out
}

// TotalInjected is the number of faults injected.
func (p *Proxy) TotalInjected() int64 {
	var n int64
	for k := range p.injected {
		n += p.injected[k].Load()
	}
	return n
}

// String summarizes the counts.
func (p *Proxy) String() string {
	m := p.Injected()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %d faults", p.Requests(), p.TotalInjected())
	for _, k := range keys {
		fmt.Fprintf(&b, ", %s %d", k, m[k])
	}
	return b.String()
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	kind, latency, stall := p.pick(r.Method)
	if latency > 0 && !sleep(r, latency) {
		return
	}
	if kind >= 0 {
		p.injected[kind].Add(1)
	}
	switch kind {
	case Err500:
		s3Error(w, http.StatusInternalServerError, "InternalError", "injected fault")
	case SlowDown:
		s3Error(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case Forbidden:
		s3Error(w, http.StatusForbidden, "AccessDenied", "injected fault")
	case ResetRequest:
		// Read a little of the body, as a server would before failing.
		io.CopyN(io.Discard, r.Body, 4096)
		reset(w, true)
	case ResetResponse, Truncate:
		p.rp.ServeHTTP(&cutWriter{ResponseWriter: w, rst: kind == ResetResponse, method: r.Method}, r)
	case Stall:
		if !sleep(r, stall) {
			return
		}
		p.rp.ServeHTTP(w, r)
	default:
		p.rp.ServeHTTP(w, r)
	}
}

func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>fault</RequestId></Error>`, code, msg)
}

// reset closes the client's connection, with a TCP reset when rst is set.
func reset(w http.ResponseWriter, rst bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return // cannot happen with net/http's HTTP/1 server
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	if buf != nil {
		buf.Flush()
	}
	if tc, ok := conn.(*net.TCPConn); ok && rst {
		tc.SetLinger(0)
	}
	conn.Close()
}

// cutWriter passes the status and headers, then half of the declared body
// (at least a byte, when there is one), then closes the connection. A
// response without a body (HEAD, a 204, a PUT's empty 200) is cut before
// its headers: the request took effect, the client never hears so.
type cutWriter struct {
	http.ResponseWriter
	rst     bool
	method  string
	status  int
	limit   int64
	written int64
	cut     bool
}

func (c *cutWriter) WriteHeader(status int) {
	c.status = status
	var n int64
	fmt.Sscan(c.Header().Get("Content-Length"), &n)
	if n <= 0 || c.method == http.MethodHead {
		c.cut = true
		reset(c.ResponseWriter, c.rst)
		return
	}
	c.limit = max(1, n/2)
	c.ResponseWriter.WriteHeader(status)
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if c.cut {
		return 0, errors.New("cut")
	}
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
		if c.cut {
			return 0, errors.New("cut")
		}
	}
	if room := c.limit - c.written; int64(len(b)) > room {
		c.ResponseWriter.Write(b[:room])
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		c.cut = true
		reset(c.ResponseWriter, c.rst)
		return 0, errors.New("cut")
	}
	n, err := c.ResponseWriter.Write(b)
	c.written += int64(n)
	return n, err
}

func (c *cutWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok && !c.cut {
		f.Flush()
	}
}

// Hijack lets reset reach the connection through the wrapper.
func (c *cutWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return c.ResponseWriter.(http.Hijacker).Hijack()
}
