module github.com/postrotate/postrotate/messages

go 1.26.0

require github.com/nats-io/nkeys v0.4.16

require (
	golang.org/x/crypto v0.52.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
