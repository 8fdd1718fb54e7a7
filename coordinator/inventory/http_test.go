package inventory

import (
	"errors"
	"slices"
	"testing"
)

const httpInventory = `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - {uid: tok, type: login, title: Record with Access Token, fields: [{type: password, value: t}]}
  - uid: u
    type: pamUser
    rotation: {type: scripts_only}
    scripts:
      - title: Rotate via REST
        records: [tok]
        http:
          method: post
          url: "https://api.example.com/users/{{.User}}/password"
          headers: {Authorization: 'Bearer {{record "Record with Access Token" "password"}}', Content-Type: application/json}
          body: '{"newPassword": {{json .NewPassword}}}'
          expect_status: [200, 204]
`

func TestHTTPAttachment(t *testing.T) {
	t.Parallel()
	inv, err := Parse([]byte(httpInventory), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := inv.Record("u")
	s := u.Scripts[0]
	if s.HTTP == nil || s.HTTP.Method != "POST" || s.HTTP.Headers["Content-Type"] != "application/json" ||
		!slices.Equal(s.HTTP.ExpectStatus, []int{200, 204}) || s.Name != "http" || s.Title != "Rotate via REST" || s.Content != nil {
		t.Fatalf("script = %+v, http = %+v", s, s.HTTP)
	}
}

func TestHTTPAttachmentProblems(t *testing.T) {
	t.Parallel()
	bad := `version: 1
records:
  - {uid: cfg, type: pamConfiguration, gateway: gw}
  - uid: u
    type: pamUser
    rotation: {type: scripts_only}
    scripts:
      - {file: x.sh, http: {url: "https://a"}}
      - {http: {method: FETCH}}
      - {http: {url: "ftp://a", expect_status: [99], headers: [a]}, command: python3}
`
	_, err := Parse([]byte(bad), t.TempDir())
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	for _, p := range []string{
		"records[1].scripts[0].http", "records[1].scripts[1].http.method", "records[1].scripts[1].http.url",
		"records[1].scripts[2].http.url", "records[1].scripts[2].http.expect_status[0]", "records[1].scripts[2].http.headers",
		"records[1].scripts[2].command",
	} {
		if !ve.HasPath(p) {
			t.Errorf("no problem at %s:\n%v", p, err)
		}
	}
}
