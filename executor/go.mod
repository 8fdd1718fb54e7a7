module github.com/postrotate/postrotate/executor

go 1.26.0

require (
	github.com/postrotate/postrotate/payload v0.0.0
	go.uber.org/goleak v1.3.0
	golang.org/x/crypto v0.58.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/hashicorp/go-cleanhttp v0.5.2 // indirect
	github.com/hashicorp/go-retryablehttp v0.7.8 // indirect
)

replace github.com/postrotate/postrotate/payload => ../payload
