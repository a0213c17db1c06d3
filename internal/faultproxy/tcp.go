package faultproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// TCPProxy forwards TCP connections on loopback and can stall them: while
// stalled, it stops passing bytes in either direction but keeps every
// connection open, as a hung network path or middlebox does.
type TCPProxy struct {
	Addr string // 127.0.0.1:PORT

	target  string
	stalled atomic.Bool
	down    atomic.Int64 // bytes passed from the server to clients
	mu      sync.Mutex
	resume  chan struct{}
	l       net.Listener
}

// StartTCP starts a proxy to target (host:port), closed at the end of the test.
func StartTCP(t testing.TB, target string) *TCPProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &TCPProxy{Addr: l.Addr().String(), target: target, l: l, resume: make(chan struct{})}
	var conns sync.WaitGroup
	var open []net.Conn
	var openMu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			openMu.Lock()
			open = append(open, c, s)
			openMu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); p.pipe(s, c, nil); s.Close(); c.Close() }()
			go func() { defer conns.Done(); p.pipe(c, s, &p.down); s.Close(); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		p.Stall(false)
		openMu.Lock()
		for _, c := range open {
			c.Close()
		}
		openMu.Unlock()
		conns.Wait()
	})
	return p
}

// Stall stops (true) or resumes (false) the flow on every connection.
func (p *TCPProxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.stalled.Load() {
		return
	}
	p.stalled.Store(on)
	if !on {
		close(p.resume)
		p.resume = make(chan struct{})
	}
}

// BytesDown is the number of bytes passed from the server to clients.
func (p *TCPProxy) BytesDown() int64 { return p.down.Load() }

func (p *TCPProxy) pipe(dst io.Writer, src io.Reader, count *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.stalled.Load() {
			p.mu.Lock()
			ch := p.resume
			p.mu.Unlock()
			if !p.stalled.Load() {
				break
			}
			<-ch
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if count != nil {
				count.Add(int64(n))
			}
		}
		if err != nil {
			return
		}
	}
}
