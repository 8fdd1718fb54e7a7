// Package vault is the record store of postrotate serve: the records applied
// from the inventory, their current passwords and the previous ones, kept in
// a JetStream KV bucket and encrypted at rest. A password a rotation commits
// survives restarts and becomes the next rotation's old password, whatever
// the inventory file still says.
//
// # Encryption
//
// Every value in the bucket is sealed with the vault [Key]: AES-256-GCM
// under a random 96-bit nonce, the KV key as additional data (a value moved
// to another key does not open), and a format version byte in front. Whole
// entries are sealed, so the bucket's files hold no password, field or
// title in plaintext. KV keys are "rec." followed by the record's uid
// encoded by [messages.HostToken]: uids are not secret and stay readable.
//
// The key comes from $POSTROTATE_VAULT_KEY ([KeyEnv]) or a key file that
// [LoadKey] creates on first start. Losing it loses the store: back it up.
// [Open] stores a sealed check value under "_check" on first use, so that a
// store opened with another key fails at once with [ErrWrongKey] instead of
// at the first read. [Key.SubKey] derives independent keys for other uses
// (HKDF-SHA256).
//
// # Passwords
//
// [Store.Apply] loads an inventory. A record keeps the password a rotation
// committed ([Store.Commit]) over the inventory's, unless the inventory's
// was edited and Apply is forced ([ApplyOptions]). [Store.Overlay] gives
// the stored passwords to an inventory before a rotation is planned from
// it. Records that leave the inventory are kept, marked: a record may hold
// the only copy of a rotated password.
//
// Every write is a compare-and-set on the entry's KV revision, retried on a
// conflict: concurrent applies, commits and coordinators lose no update.
package vault
