// Package storage defines the Store interface that every repository backend
// implements, its contract, and the errors and key rules that callers and
// backends share.
//
// A Store is a flat key space of immutable objects. Writes are create-only
// and atomic: a reader never sees a half-written object under its final key,
// and an existing object is never replaced by Put. Small objects (locks, the
// repository config) are updated by compare-and-swap (ReadSmall and Swap).
// "Not found" (ErrNotFound) is only ever the store's answer "does not
// exist", never a denied or failed request. Keys and metadata follow one
// set of rules in every backend (ValidKey, ValidMeta), so a repository holds
// the same keys whatever its store. The Store documentation says the rest;
// the conformance suite pins down what it leaves open.
//
// Where the parts live:
//
//   - Backends, one package each: storage/local (a directory), storage/s3
//     (S3 and S3-compatible stores) and storage/mem (in memory, for tests).
//     A new backend (Azure, GCS, SFTP) is one more package that passes the
//     suite.
//   - storage/storagetest: the conformance suite that every backend, and
//     every decorator over a backend, runs from its tests.
//   - Decorators, Stores that wrap a Store and keep its contract:
//     storage/retry (transient errors retried with backoff within a total
//     deadline), and storage/asof (a versioned store read-only as of a
//     past time), which does not run the suite since it refuses writes. Others, such as rate limiting or metrics,
//     are left out until a user needs them: backup's --max-rate already
//     limits the server's send rate at the source, and nothing reads
//     per-store metrics yet. A new decorator is a package under storage/
//     that runs the conformance suite over a wrapped store, as retry does.
package storage
