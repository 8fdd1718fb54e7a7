//go:build !unix

package cli

// lockDataDir does nothing where flock does not exist: run one serve per
// data directory.
func lockDataDir(string) (func(), error) { return func() {}, nil }
