// Package e2e holds end-to-end tests that run postrotate as real processes
// on loopback: `postrotate serve`, `postrotate-worker` processes, and an
// external nats-server built from the module (`go tool nats-server`). The
// package has no code of its own.
package e2e
