// Package sftp implements storage.Store on a directory of a server reached
// over SSH (sftp://USER@HOST[:PORT]/PATH), with golang.org/x/crypto/ssh and
// github.com/pkg/sftp.
//
// Objects are files in the format of storage/objfile (the local store's), so
// a repository copied between an SFTP server and a local disk stays valid.
//
// Authentication is by key only (Config.IdentityFile); the server's host key
// must be listed in a known_hosts file (Config.KnownHostsFile): an unknown or
// mismatching host key is an error naming the host, never trusted on first
// use.
//
// Create-only Put: the bytes go to a temporary file ".tmp-*" (never a valid
// key) in the final directory, created exclusively, fsynced with
// fsync@openssh.com and then linked to the final name with
// hardlink@openssh.com, which fails if the name exists (where a rename could
// replace it). The temporary name is removed afterwards, and the directory is
// fsynced when the server lets us open it (OpenSSH does). Probe checks that
// the server offers these extensions and that a second link is refused.
//
// Compare-and-swap (Swap): SFTP has no conditional replace, so replacements
// of one key are serialized by a guard file ".tmp-guard-NAME" next to it,
// created exclusively. The holder compares the current version (a hash of
// the whole file, as in the local store) and renames the new version over
// the key with posix-rename@openssh.com, atomic for readers. A holder gives
// up if it held the guard longer than GuardHold; a guard older than
// GuardStale (by the server's clock) is left by a dead writer and is broken:
// the breaker first links it to a name derived from its content, which only
// one breaker can create, and removes it only if that link holds the content
// it judged stale.
//
// Errors: "not found" is only SFTP's SSH_FX_NO_SUCH_FILE; permission denied,
// authentication and host key errors are storage.PermanentErrors; a lost
// connection is a plain (retryable) error and the next call reconnects.
package sftp
