package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// ProbeConditionalWrites checks that the service refuses to replace an
// existing blob on a conditional write, for each kind of write the Store
// makes: a Put Blob with If-None-Match: * (small objects, Swap's create), a
// Put Blob with If-Match on a wrong ETag (Swap's replace) and a Put Block
// List with If-None-Match: * (objects larger than one block). It writes a
// probe blob below the prefix and deletes it afterwards (best effort). It
// returns nil only if the three writes were refused with 412.
func (s *Store) ProbeConditionalWrites(ctx context.Context) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	key := ".pgark-probe-" + hex.EncodeToString(rnd[:])
	bb := s.blob(key)
	url := s.url(key)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		bb.Delete(dctx, nil)
	}()
	unsupported := func(what string) error {
		return fmt.Errorf("probe of %s: %s; the service does not honour conditional writes, "+
			"so concurrent writers could replace each other's objects", url, what)
	}
	is412 := func(err error) bool {
		re := respErr(err)
		return re != nil && re.StatusCode == http.StatusPreconditionFailed
	}
	put := func(data string, ifVersion string) error {
		cond := ifNoneMatch()
		if ifVersion != "" {
			cond = ifMatch(ifVersion)
		}
		_, err := bb.Upload(ctx, streaming.NopCloser(bytes.NewReader([]byte(data))), &blockblob.UploadOptions{AccessConditions: cond})
		return err
	}
	if err := put("pgark conditional write probe\n", ""); err != nil {
		return s.mapErr("probe: put", opWrite, key, err)
	}
	switch err := put("pgark conditional write probe, second\n", ""); {
	case err == nil:
		return unsupported("a second Put Blob with If-None-Match: * to the same name succeeded")
	case !is412(err) && errorCode(respErr(err)) != "BlobAlreadyExists":
		return unsupported(fmt.Sprintf("a second Put Blob with If-None-Match: * failed with an unexpected error: %v", redactURL(err)))
	}
	switch err := put("pgark conditional replace probe\n", `"0x8DEADBEEF000000"`); {
	case err == nil:
		return unsupported("a Put Blob with If-Match on a wrong ETag replaced the blob (the repository lock needs If-Match)")
	case !is412(err):
		return unsupported(fmt.Sprintf("a Put Blob with If-Match on a wrong ETag failed with an unexpected error: %v", redactURL(err)))
	}
	id := base64.StdEncoding.EncodeToString([]byte("pgark-probe-block-0000"))
	data := []byte("pgark conditional block list probe\n")
	if _, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(data)), nil); err != nil {
		return s.mapErr("probe: put block", opOther, key, err)
	}
	_, err := bb.CommitBlockList(ctx, []string{id}, &blockblob.CommitBlockListOptions{AccessConditions: ifNoneMatch()})
	switch {
	case err == nil:
		return unsupported("a Put Block List with If-None-Match: * replaced an existing blob")
	case !is412(err) && errorCode(respErr(err)) != "BlobAlreadyExists":
		return unsupported(fmt.Sprintf("a Put Block List with If-None-Match: * onto an existing blob failed with an unexpected error: %v", redactURL(err)))
	}
	return nil
}
