module github.com/postrotate/postrotate/payload

go 1.26.0
