// Command latencyproxy is a loopback reverse proxy for the WAL benchmark
// (bench/wal.sh): it forwards every request to an S3 server after a fixed
// delay, to stand in for the round trip to a real object store.
//
// Requests go through unchanged: the method, path, query, headers and the
// Host header the client sent (so that SigV4 signatures, which cover the
// host, stay valid), and bodies are streamed both ways, never buffered
// whole. It listens on plain HTTP (-listen) and, for clients that speak only
// HTTPS (pgBackRest), on TLS (-tls-listen) with a self-signed certificate
// made at start-up for 127.0.0.1, ::1 and localhost.
//
//	latencyproxy -listen 127.0.0.1:9100 -tls-listen 127.0.0.1:9101 \
//	    -target http://127.0.0.1:9000 -delay 20ms
//
// It prints the URLs it serves (one a line: http:// first, then https://),
// so that port 0 can be given, and runs until SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "plain HTTP listen address (empty: none)")
	tlsListen := flag.String("tls-listen", "", "HTTPS listen address, self-signed certificate (empty: none)")
	target := flag.String("target", "", "the S3 server's base URL, e.g. http://127.0.0.1:9000")
	delay := flag.Duration("delay", 20*time.Millisecond, "added before forwarding each request")
	flag.Parse()
	log.SetPrefix("latencyproxy: ")
	log.SetFlags(0)
	if *target == "" || flag.NArg() != 0 {
		log.Fatal("usage: latencyproxy -target URL [-listen ADDR] [-tls-listen ADDR] [-delay 20ms]")
	}
	if *listen == "" && *tlsListen == "" {
		log.Fatal("nothing to listen on: give -listen and/or -tls-listen")
	}
	t, err := url.Parse(*target)
	if err != nil || t.Scheme == "" || t.Host == "" {
		log.Fatalf("-target %q: not a URL such as http://127.0.0.1:9000", *target)
	}
	h := &delayed{delay: *delay, next: newProxy(t)}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 2)
	var servers []*http.Server
	if *listen != "" {
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}
		servers = append(servers, srv)
		fmt.Printf("http://%s\n", l.Addr())
		go func() { errc <- srv.Serve(l) }()
	}
	if *tlsListen != "" {
		cert, err := selfSigned()
		if err != nil {
			log.Fatal(err)
		}
		l, err := net.Listen("tcp", *tlsListen)
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: time.Minute,
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
			// HTTP/1.1 only, as the S3 clients here speak it.
			TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		}
		servers = append(servers, srv)
		fmt.Printf("https://%s\n", l.Addr())
		go func() { errc <- srv.ServeTLS(l, "", "") }()
	}
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		srv.Shutdown(sctx)
	}
}

// delayed sleeps before handing each request on (or until the client gives
// up).
type delayed struct {
	delay time.Duration
	next  http.Handler
}

func (d *delayed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.delay > 0 {
		t := time.NewTimer(d.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	d.next.ServeHTTP(w, r)
}

func newProxy(target *url.URL) *httputil.ReverseProxy {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	// Pass Accept-Encoding and the body as they are, never decompress.
	tr.DisableCompression = true
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 256
	tr.ForceAttemptHTTP2 = false
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			// SetURL sets the outgoing Host to the target's; keep the one the
			// client sent and signed.
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
		// Stream responses as they come (GETs of whole segments).
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Printf("%s %s: %v", r.Method, r.URL.Path, err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
}

// selfSigned makes a throw-away ECDSA certificate for the loopback names.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "latencyproxy"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
