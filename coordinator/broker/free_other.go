//go:build !linux && !darwin

package broker

// freeBytes is not measured here: Heal always tries.
func freeBytes(string) (uint64, error) { return MinFree, nil }
