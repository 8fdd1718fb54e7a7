module github.com/postrotate/postrotate/messages

go 1.26.0
