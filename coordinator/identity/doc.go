// Package identity keeps the identities of a postrotate deployment in a
// JetStream KV bucket (Bucket: "<PREFIX>_IDENTITIES"): the coordinator's,
// which signs tasks and seals their secrets, and each enrolled worker's
// public keys — its NATS nkey user and its curve key.
//
// # Keys
//
//	coordinator       the coordinator's signing and curve seeds
//	worker.<host>     a worker's public keys (host token, see messages.HostToken)
//
// Every value is sealed with a key derived from the vault key
// (SubKey("identities")), bound to its KV key: the seeds are secret, and a
// worker's entry cannot be forged or moved to another host by whoever can
// write to the bucket without the vault key. Every coordinator sharing the
// store (and the vault key) uses the same identity.
//
// A worker's seeds are returned once, by Enroll, and not kept — except for
// the in-process workers of `serve --local-workers` (Local), whose seeds the
// store keeps so that every start reuses them.
//
// The coordinator's own NATS user is not stored: CoordinatorUser derives it
// from the vault key, because the embedded nats-server must know it before
// the store can be read.
package identity
