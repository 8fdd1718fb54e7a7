// Package integration runs postrotate as docker-compose.yml deploys it —
// a three-node NATS JetStream cluster, serve with --replicas 3, two gateway
// workers of one host, a machine with its own worker and an SSH-only
// machine — in containers built by `make images`, and drives rotations
// through the HTTP API. The tests wait on what the deployment publishes —
// rotation events, results, worker registrations — through a NATS client
// of their own on the nodes' client ports, published on the host.
//
// Every test gets its own Docker network, volume and containers, removed
// when it ends, also on failure. Without a Docker engine or the images, the
// tests skip and say what is missing. Run them with `make test-integration`.
package integration
