package messages_test

import (
	"fmt"

	"github.com/postrotate/postrotate/messages"
)

func ExampleSubjects() {
	var s messages.Subjects // default prefix "postrotate"
	fmt.Println(s.Tasks("web.01.example.com"))
	fmt.Println(s.Result("0193c7a2-7d1e-7c4f-9a43-1f0a9d3b7e21", 2))
	fmt.Println(s.RotationEvent(messages.EventCompleted))
	// Output:
	// postrotate.tasks.web_2E01_2Eexample_2Ecom
	// postrotate.results.0193c7a2-7d1e-7c4f-9a43-1f0a9d3b7e21.2
	// postrotate.events.rotation.completed
}

func ExampleDecodeResult() {
	data := []byte(`{"uid":"svc-user","command":"/bin/sh notify.sh","system":"Linux","title":"Notify",
		"name":"notify.sh","success":false,"stdout":"","stderr":"curl: (7) connection refused",
		"schema_version":1,"rotation_id":"r1","step":2,"host":"gateway-1","exit_code":7}`)
	r, err := messages.DecodeResult(data)
	if err != nil {
		fmt.Println(err)
		return
	}
	if r.WasFailure() {
		fmt.Printf("For record %s, the script %s failed: %s\n", r.UID, r.Title, r.Stderr)
	}
	// Output:
	// For record svc-user, the script Notify failed: curl: (7) connection refused
}
