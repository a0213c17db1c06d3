package gcs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// This file is a small client of the GCS JSON API
// (https://cloud.google.com/storage/docs/json_api), the part that pgark
// uses: objects get (metadata, or the data with alt=media), list, delete,
// and insert as a multipart (one request) or a resumable upload.

// defaultEndpoint is Google's JSON API endpoint.
const defaultEndpoint = "https://storage.googleapis.com/storage/v1/"

// castagnoli is the CRC-32C table of GCS's object checksums.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// endpoints returns the JSON API base URL (ending in "/storage/v1/"), the
// upload base URL ("/upload/storage/v1/") and whether requests go without
// credentials: Config.Endpoint, else STORAGE_EMULATOR_HOST's emulator (no
// credentials), else Google's.
func endpoints(cfg Config) (api, upload string, anonymous bool, err error) {
	ep, anonymous := cfg.Endpoint, cfg.Anonymous
	if host := os.Getenv("STORAGE_EMULATOR_HOST"); host != "" {
		anonymous = true
		if ep == "" {
			if !strings.Contains(host, "://") {
				host = "http://" + host
			}
			ep = strings.TrimSuffix(host, "/") + "/storage/v1/"
		}
	}
	if ep == "" {
		ep = defaultEndpoint
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", "", false, fmt.Errorf("endpoint %q is not an http:// or https:// URL such as https://storage.googleapis.com/storage/v1/", ep)
	}
	path := strings.TrimSuffix(u.Path, "/")
	if path == "" {
		path = "/storage/v1"
	}
	base := u.Scheme + "://" + u.Host
	return base + path + "/", base + "/upload" + path + "/", anonymous, nil
}

// apiError is an error answer of the JSON API.
type apiError struct {
	Code    int    // HTTP status
	Message string // the answer's error message, or its body
	Reason  string // the first error's reason, such as "notFound"
}

func (e *apiError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	if e.Reason != "" {
		return fmt.Sprintf("HTTP %d: %s (%s)", e.Code, msg, e.Reason)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Code, msg)
}

// readAPIError reads an error answer.
func readAPIError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &apiError{Code: resp.StatusCode}
	var doc struct {
		Error struct {
			Message string `json:"message"`
			Errors  []struct {
				Message string `json:"message"`
				Reason  string `json:"reason"`
			} `json:"errors"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &doc) == nil && (doc.Error.Message != "" || len(doc.Error.Errors) > 0) {
		e.Message = doc.Error.Message
		if len(doc.Error.Errors) > 0 {
			e.Reason = doc.Error.Errors[0].Reason
			if e.Message == "" {
				e.Message = doc.Error.Errors[0].Message
			}
		}
	} else {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 512 {
			e.Message = e.Message[:512] + "..."
		}
	}
	return e
}

// apiStatus returns the HTTP status of a JSON API error, or 0.
func apiStatus(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// object is the part of an object resource that pgark reads.
type object struct {
	Name       string            `json:"name"`
	Size       int64             `json:"size,string"`
	Generation int64             `json:"generation,string"`
	Updated    time.Time         `json:"updated"`
	Metadata   map[string]string `json:"metadata"`
}

// call is one JSON API request. Its body is held in memory (parts sent one
// after the other), so that it can be sent again.
type call struct {
	method, url string
	query       url.Values
	header      http.Header
	body        [][]byte
	attempts    int // 0: maxAttempts
}

// do sends c and returns the answer if its status is below 300 or 308 (a
// resumable upload's "incomplete"); any other answer is an *apiError.
// Transient failures (connection errors, 408, 429, 5xx) are tried again,
// up to c.attempts times in all, after a short backoff. pgark's writes
// carry preconditions, so sending one again cannot replace another
// writer's object.
func (cl *client) do(ctx context.Context, c call) (*http.Response, error) {
	attempts := c.attempts
	if attempts <= 0 {
		attempts = maxAttempts
	}
	for i := 1; ; i++ {
		resp, err := cl.once(ctx, c)
		if err == nil || i >= attempts || !retryable(err) || ctx.Err() != nil {
			return resp, err
		}
		if backoff(ctx, i) != nil {
			return nil, err
		}
	}
}

// backoff waits before try n+1 (n = 1, 2...): about 100 ms, 200 ms, 400 ms...
func backoff(ctx context.Context, n int) error {
	d := time.Duration(50<<n)*time.Millisecond + rand.N(100*time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (cl *client) once(ctx context.Context, c call) (*http.Response, error) {
	u := c.url
	if len(c.query) > 0 {
		u += "?" + c.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, c.method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "pgark")
	if c.body != nil {
		var n int64
		for _, p := range c.body {
			n += int64(len(p))
		}
		req.ContentLength = n
		req.GetBody = func() (io.ReadCloser, error) {
			rs := make([]io.Reader, len(c.body))
			for i, p := range c.body {
				rs[i] = bytes.NewReader(p)
			}
			return io.NopCloser(io.MultiReader(rs...)), nil
		}
		req.Body, _ = req.GetBody()
		if n == 0 {
			req.Body, req.GetBody = http.NoBody, nil
		}
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 300 || resp.StatusCode == http.StatusPermanentRedirect {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readAPIError(resp)
}

// retryable reports whether a request that failed with err may succeed if
// sent again.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || tokenRefused(err) {
		return false
	}
	if code := apiStatus(err); code != 0 {
		return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
	}
	return true // the connection failed, or the token could not be fetched
}

// decode reads a JSON answer into v and closes it.
func decode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // keep the connection
	return nil
}

// client sends the JSON API requests of one bucket.
type client struct {
	hc     *http.Client
	api    string // ".../storage/v1/"
	upload string // ".../upload/storage/v1/"
	bucket string
}

func (cl *client) objectURL(name string) string {
	return cl.api + "b/" + url.PathEscape(cl.bucket) + "/o/" + url.PathEscape(name)
}

// stat is objects get: the object's metadata.
func (cl *client) stat(ctx context.Context, name string) (*object, error) {
	resp, err := cl.do(ctx, call{method: http.MethodGet, url: cl.objectURL(name)})
	if err != nil {
		return nil, err
	}
	var o object
	if err := decode(resp, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// media is objects get with alt=media: the data of generation gen (0: the
// live one), from offset for length bytes (length < 0: to the end; offset
// 0 and length < 0: the whole object, whose CRC-32C is checked at the end).
func (cl *client) media(ctx context.Context, name string, gen, offset, length int64) (*http.Response, error) {
	q := url.Values{"alt": {"media"}}
	if gen != 0 {
		q.Set("generation", fmt.Sprint(gen))
	}
	h := http.Header{}
	switch {
	case length > 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	return cl.do(ctx, call{method: http.MethodGet, url: cl.objectURL(name), query: q, header: h})
}

// listPage is one page of objects list.
type listPage struct {
	Items         []object `json:"items"`
	NextPageToken string   `json:"nextPageToken"`
}

// list is objects list: the objects whose names start with prefix, in
// lexical order, one page after the other.
func (cl *client) list(ctx context.Context, prefix string, fn func(*object) error) error {
	q := url.Values{"prefix": {prefix}, "fields": {"nextPageToken,prefixes,items(name,size,updated)"}}
	for {
		resp, err := cl.do(ctx, call{method: http.MethodGet, url: cl.api + "b/" + url.PathEscape(cl.bucket) + "/o", query: q})
		if err != nil {
			return err
		}
		var page listPage
		if err := decode(resp, &page); err != nil {
			return err
		}
		for i := range page.Items {
			if err := fn(&page.Items[i]); err != nil {
				return err
			}
		}
		if page.NextPageToken == "" {
			return nil
		}
		q.Set("pageToken", page.NextPageToken)
	}
}

// remove is objects delete.
func (cl *client) remove(ctx context.Context, name string) error {
	resp, err := cl.do(ctx, call{method: http.MethodDelete, url: cl.objectURL(name)})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// newObject is the resource of an object being uploaded.
type newObject struct {
	Name        string            `json:"name"`
	ContentType string            `json:"contentType,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	CRC32C      string            `json:"crc32c,omitempty"`
}

// crcString is a CRC-32C as GCS writes it: base64 of 4 big-endian bytes.
func crcString(sum uint32) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum))
}

// insert uploads data in one multipart request with the precondition
// ifGenerationMatch=ifGen (0: the object must not exist).
func (cl *client) insert(ctx context.Context, o newObject, data []byte, ifGen int64) (*object, error) {
	o.CRC32C = crcString(crc32.Checksum(data, castagnoli))
	meta, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var rnd [16]byte
	for i := range rnd {
		rnd[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[rand.N(36)]
	}
	boundary := "pgark-" + string(rnd[:])
	head := "--" + boundary + "\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n" + string(meta) +
		"\r\n--" + boundary + "\r\nContent-Type: " + o.ContentType + "\r\n\r\n"
	tail := "\r\n--" + boundary + "--\r\n"
	resp, err := cl.do(ctx, call{
		method: http.MethodPost,
		url:    cl.upload + "b/" + url.PathEscape(cl.bucket) + "/o",
		query:  url.Values{"uploadType": {"multipart"}, "ifGenerationMatch": {fmt.Sprint(ifGen)}},
		header: http.Header{"Content-Type": {"multipart/related; boundary=" + boundary}},
		body:   [][]byte{[]byte(head), data, []byte(tail)},
	})
	if err != nil {
		return nil, err
	}
	var got object
	if err := decode(resp, &got); err != nil {
		return nil, err
	}
	return &got, nil
}

// startResumable starts a resumable upload with the precondition
// ifGenerationMatch=ifGen, checked when the upload is finalised, and
// returns its session URL.
func (cl *client) startResumable(ctx context.Context, o newObject, ifGen int64) (string, error) {
	meta, err := json.Marshal(o)
	if err != nil {
		return "", err
	}
	resp, err := cl.do(ctx, call{
		method: http.MethodPost,
		url:    cl.upload + "b/" + url.PathEscape(cl.bucket) + "/o",
		query:  url.Values{"uploadType": {"resumable"}, "name": {o.Name}, "ifGenerationMatch": {fmt.Sprint(ifGen)}},
		header: http.Header{"Content-Type": {"application/json; charset=UTF-8"}, "X-Upload-Content-Type": {o.ContentType}},
		body:   [][]byte{meta},
	})
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("starting a resumable upload: the answer (%s) has no session URL", resp.Status)
	}
	return loc, nil
}

// putChunk sends data at offset of a resumable upload; total is the
// object's size with the last chunk, -1 before. After a transient failure
// it sends the chunk again from its start: GCS ignores the bytes it already
// holds. It returns the object once the last chunk is accepted (nil
// before).
func (cl *client) putChunk(ctx context.Context, session string, data []byte, offset, total int64, crc string) (*object, error) {
	end := offset + int64(len(data))
	sent := offset // send from here
	tot := "*"
	if total >= 0 {
		tot = fmt.Sprint(total)
	}
	failures := 0
	for requests := 1; ; requests++ {
		if requests > 4*maxAttempts {
			return nil, fmt.Errorf("resumable upload: the server took no more of the chunk at %d after %d requests", sent, requests-1)
		}
		h := http.Header{"Content-Range": {fmt.Sprintf("bytes %d-%d/%s", sent, end-1, tot)}}
		if total >= 0 && crc != "" {
			h.Set("X-Goog-Hash", "crc32c="+crc)
		}
		resp, err := cl.do(ctx, call{method: http.MethodPut, url: session, header: h, body: [][]byte{data[sent-offset:]}, attempts: 1})
		if err != nil {
			failures++
			if !retryable(err) || ctx.Err() != nil || failures >= maxAttempts {
				return nil, err
			}
			if err := backoff(ctx, failures); err != nil {
				return nil, err
			}
			sent = offset
			continue
		}
		held, done, err := uploadState(resp)
		switch {
		case err != nil:
			return nil, err
		case done != nil && total < 0:
			return nil, errors.New("resumable upload: finalised before its last chunk")
		case done != nil:
			return done, nil
		case held < offset || held > end:
			return nil, fmt.Errorf("resumable upload: the server holds %d bytes, expected between %d and %d", held, offset, end)
		case held == end && total < 0:
			return nil, nil
		}
		sent = held // a part of the chunk was not taken: send the rest
	}
}

// uploadState reads a resumable upload's answer: the object once
// finalised (200, 201), else how many bytes the server holds (308 and its
// Range header, "bytes=0-N").
func uploadState(resp *http.Response) (held int64, done *object, err error) {
	if resp.StatusCode != http.StatusPermanentRedirect {
		var o object
		if err := decode(resp, &o); err != nil {
			return 0, nil, err
		}
		return 0, &o, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r := resp.Header.Get("Range")
	if r == "" {
		return 0, nil, nil
	}
	var first, last int64
	if _, err := fmt.Sscanf(r, "bytes=%d-%d", &first, &last); err != nil || first != 0 || last < 0 {
		return 0, nil, fmt.Errorf("resumable upload: unexpected Range %q in the server's answer", r)
	}
	return last + 1, nil, nil
}
