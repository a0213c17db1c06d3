package azure

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/pgark/pgark/internal/testenv"
)

// TestProbeRefusesUnconditionalStore puts a proxy that drops the
// conditional headers (as a gateway that does not know them might) between
// the store and Azurite: the probe must see its blob replaced and refuse
// the store. The store authenticates with a SAS token, whose signature does
// not cover the headers (a Shared Key one would, and fail with a 403).
func TestProbeRefusesUnconditionalStore(t *testing.T) {
	srv := testenv.AzureStart(t)
	cont := newContainer(t, srv)
	target, err := url.Parse(srv.BaseURL())
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
		pr.Out.Header.Del("If-None-Match")
		pr.Out.Header.Del("If-Match")
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: rp}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })

	token := containerSAS(t, srv, cont, sas.ContainerPermissions{Read: true, Create: true, Write: true, Delete: true, List: true})
	direct := mustNew(t, Config{Container: cont, Endpoint: srv.Endpoint, SASToken: token})
	if err := direct.ProbeConditionalWrites(t.Context()); err != nil {
		t.Fatalf("probe without the proxy: %v", err)
	}
	s := mustNew(t, Config{Container: cont, Endpoint: "http://" + l.Addr().String() + "/" + srv.Account, SASToken: token})
	err = s.ProbeConditionalWrites(t.Context())
	if err == nil || !strings.Contains(err.Error(), "does not honour conditional writes") {
		t.Fatalf("probe through a proxy that drops If-None-Match: %v, want a refusal", err)
	}
	t.Logf("refused: %v", err)
}
