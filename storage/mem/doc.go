// Package mem implements storage.Store in memory, for tests.
//
// It gives the guarantees of the local and S3 stores, as the conformance
// suite (storage/storagetest) pins them down: create-only, atomic Puts (an
// object appears whole under its key only once its bytes were all read);
// Swap as compare-and-swap on versions that change with every write; "not
// found" only for keys that hold no object; the keys and metadata that
// storage.ValidKey and storage.ValidMeta accept; List in lexical key order
// without metadata; the GetRange bounds of S3.
//
// Like S3 and unlike the local store, a key may be an object and the prefix
// of other keys at once ("a/b" and "a/b/c"). Versions are a counter, so
// rewriting identical bytes gives a new version (S3's ETag and the local
// store's content hash do not): callers must not rely on either.
//
// Nothing is durable and nothing is shared between processes: use it where a
// test needs a Store, not where it tests what a file system or an object
// store does.
package mem
