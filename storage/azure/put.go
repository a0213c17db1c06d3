package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/pgark/pgark/storage"
)

// blockSizeFor returns the size of block number num (from 0) of an object
// of size bytes (-1: unknown). Known size: one block size that fits the
// object in the service's 50,000 blocks, rounded up to a MiB. Unknown size:
// the configured size, doubled after every blocksPerStep blocks (8 MiB
// blocks: 8 GiB in the first 1000 blocks, about 160 TiB in 50,000).
func (s *Store) blockSizeFor(size int64, num int) int64 {
	bs := s.blockSize
	if size >= 0 {
		bs = max(bs, (size+maxBlocks-1)/maxBlocks)
		bs = (bs + 1<<20 - 1) &^ (1<<20 - 1)
		return min(bs, MaxBlockSize)
	}
	for step := num / blocksPerStep; step > 0 && bs < MaxBlockSize; step-- {
		bs *= 2
	}
	return min(bs, MaxBlockSize)
}

// Put stores r under key, create-only. An object that fits in one block goes
// up with one Put Blob; a larger one as staged blocks, at most two in
// flight, committed by a Put Block List. Both carry If-None-Match: *: the
// object appears only when its upload or commit succeeds, and never
// replaces one.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	if err := storage.ValidMeta(opts.Meta); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.url(key), err)
	}
	body := &checkedReader{r: storage.ContextReader(ctx, r), size: opts.Size}
	bs := s.blockSizeFor(opts.Size, 0)
	firstLen := bs
	if opts.Size >= 0 && opts.Size < bs {
		firstLen = opts.Size + 1 // room to see the end (or a longer reader)
	}
	first := make([]byte, firstLen)
	n, eof, err := fill(body, first)
	if err != nil {
		return fmt.Errorf("put %s: reading the data: %w", s.url(key), err)
	}
	if eof {
		_, err := s.blob(key).Upload(ctx, streaming.NopCloser(bytes.NewReader(first[:n])), &blockblob.UploadOptions{
			HTTPHeaders:      octetStream(),
			Metadata:         encodeMeta(opts.Meta),
			AccessConditions: ifNoneMatch(),
		})
		return s.mapErr("put", opWrite, key, err)
	}
	return s.putBlocks(ctx, key, body, opts, first)
}

func octetStream() *blob.HTTPHeaders {
	return &blob.HTTPHeaders{BlobContentType: ptr("application/octet-stream")}
}

// fill reads into buf until it is full or r ends (eof).
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	n, err = io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return n, true, nil
	}
	return n, false, err
}

// putBlocks stages first (a full block) and the rest of r block by block,
// at most concurrency blocks in flight from at most concurrency+1 buffers,
// then commits the block list with If-None-Match: *. The first failure
// cancels the other uploads; nothing is committed then.
func (s *Store) putBlocks(ctx context.Context, key string, r io.Reader, opts storage.PutOptions, first []byte) error {
	bb := s.blob(key)
	var rnd [8]byte
	rand.Read(rnd[:])
	idPrefix := hex.EncodeToString(rnd[:])

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		ids      []string
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}
	inFlight := make(chan struct{}, concurrency)
	free := make(chan []byte, concurrency+1)
	for range concurrency {
		free <- nil // allocated when first used
	}
	stage := func(num int, data []byte) {
		// Block IDs of one blob must all have the same length.
		id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%s-%06d", idPrefix, num))
		ids = append(ids, id)
		select {
		case inFlight <- struct{}{}:
		case <-sctx.Done():
			free <- data
			return
		}
		wg.Go(func() {
			defer func() {
				<-inFlight
				free <- data
			}()
			_, err := bb.StageBlock(sctx, id, streaming.NopCloser(bytes.NewReader(data)), nil)
			if err != nil {
				fail(s.mapErr(fmt.Sprintf("put (block %d)", num), opOther, key, err))
			}
		})
	}

	stage(0, first)
	for num := 1; failed() == nil; num++ {
		if num >= maxBlocks {
			fail(&storage.PermanentError{Err: fmt.Errorf("put %s: the object is too large (more than %d blocks; raise the block size)", s.url(key), maxBlocks)})
			break
		}
		var buf []byte
		select {
		case buf = <-free:
		case <-sctx.Done():
		}
		if sctx.Err() != nil {
			break
		}
		bs := s.blockSizeFor(opts.Size, num)
		if int64(cap(buf)) < bs {
			buf = make([]byte, bs)
		}
		n, eof, err := fill(r, buf[:bs])
		if err != nil {
			fail(fmt.Errorf("put %s: reading the data: %w", s.url(key), err))
			break
		}
		if n > 0 {
			stage(num, buf[:n])
		} else {
			free <- buf
		}
		if eof {
			break
		}
	}
	wg.Wait()
	if err := failed(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", s.url(key), err)
	}
	_, err := bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		HTTPHeaders:      octetStream(),
		Metadata:         encodeMeta(opts.Meta),
		AccessConditions: ifNoneMatch(),
	})
	return s.mapErr("put (commit block list)", opWrite, key, err)
}

// checkedReader fails instead of ending when the reader yields another
// number of bytes than size (when size >= 0), so that the upload fails
// before its commit.
type checkedReader struct {
	r    io.Reader
	size int64
	n    int64
	err  error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case c.size >= 0 && c.n > c.size:
		err = fmt.Errorf("the reader yielded more than the expected %d bytes", c.size)
		n = 0
	case err == io.EOF && c.size >= 0 && c.n != c.size:
		err = fmt.Errorf("the reader yielded %d bytes, expected %d", c.n, c.size)
	case err == nil || err == io.EOF:
		return n, err
	}
	c.err = err
	return n, err
}
