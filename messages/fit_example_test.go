package messages_test

import (
	"fmt"
	"strings"

	"github.com/postrotate/postrotate/messages"
)

func ExampleEncodeResultWithin() {
	rr := messages.RotationResult{
		SchemaVersion: messages.SchemaVersion, RotationID: "r-1", Step: 1, Host: "gw", Success: true,
		Stdout: strings.Repeat("0123456789", 100), Stderr: "warning: slow\n",
	}
	// A server's max_payload, less room for headers.
	data, err := messages.EncodeResultWithin(rr, 360)
	if err != nil {
		fmt.Println(err)
		return
	}
	back, _ := messages.DecodeResult(data)
	fmt.Println(len(data) <= 360, back.StdoutTruncated, back.StderrTruncated)
	fmt.Printf("%q\n", back.Stdout)
	fmt.Printf("%q\n", back.Stderr)
	// Output:
	// true true false
	// "0123456789012345678901234567890123456\n[postrotate: 926 bytes omitted]\n3456789012345678901234567890123456789"
	// "warning: slow\n"
}
