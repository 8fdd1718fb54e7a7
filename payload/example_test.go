package payload_test

import (
	"fmt"
	"log"
	"strings"

	"github.com/postrotate/postrotate/payload"
)

func ExampleBuild() {
	in := payload.Input{
		Resource: &payload.Record{UID: "res1", Type: "pamMachine", Title: "db01", Fields: []payload.Field{
			{Type: "pamHostname", Value: []any{map[string]any{"hostName": "10.0.0.5", "port": "22"}}},
		}},
		User: payload.Record{UID: "usr1", Type: "pamUser", Title: "app user", Fields: []payload.Field{
			{Type: "login", Value: []any{"app"}},
			{Type: "password", Value: []any{"n3w"}},
			{Type: "text", Label: "title", Value: []any{"a label that is taken"}},
			{Type: "url"},
		}},
		NewPassword: "n3w",
		OldPassword: "0ld",
	}
	p, err := payload.Build(in)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.User, p.ResourceRecordUID, p.UserRecordUID)

	dicts, err := p.RecordDicts()
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range dicts {
		js, _ := d.MarshalJSON()
		fmt.Println(string(js))
	}

	stdin, err := p.Encode()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes, ending in %q\n", len(stdin), stdin[len(stdin)-1:])
	// Output:
	// app res1 usr1
	// {"uid":"res1","title":"db01","pamHostname":{"hostName":"10.0.0.5","port":"22"}}
	// {"uid":"usr1","title":"app user","login":"app","password":"n3w","title_2":"a label that is taken","url":null}
	// 529 bytes, ending in "\n"
}

func ExampleDecode() {
	// What a script receives on stdin (here: testdata/minimal.stdin).
	line := []byte("eyJwcm92aWRlclJlY29yZFVpZCI6IiIsInJlc291cmNlUmVjb3JkVWlkIjoiIiwidXNlclJlY29yZFVpZCI6Ik9ubHlVc2VyMDAwMDAwMDAwMDAwMDAiLCJuZXdQYXNzd29yZCI6Ilp6OSEiLCJvbGRQYXNzd29yZCI6IiIsInVzZXIiOiJzdmNfYmFja3VwIiwicmVjb3JkcyI6Ilczc2lkV2xrSWpvaVQyNXNlVlZ6WlhJd01EQXdNREF3TURBd01EQXdNREF3TUNJc0luUnBkR3hsSWpvaWMzUmhibVJoYkc5dVpTQjFjMlZ5SWl3aWJtOTBaU0k2SW14dloybHVJR052YldWeklHWnliMjBnZEdobElHeHZaMmx1SUdacFpXeGtJaXdpYkc5bmFXNGlPaUp6ZG1OZlltRmphM1Z3SWl3aWNHRnpjM2R2Y21RaU9tNTFiR3g5WFE9PSJ9\n")
	p, err := payload.Decode(line)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.UserRecordUID, p.User)
	dicts, err := p.RecordDicts()
	if err != nil {
		log.Fatal(err)
	}
	for _, d := range dicts {
		fmt.Println(d.Keys(), d.String("login"))
	}

	// Malformed input: the error says where, never what.
	_, err = payload.Decode([]byte("c2VjcmV0\nc2VjcmV0\n"))
	fmt.Println(err)
	// Output:
	// OnlyUser00000000000000 svc_backup
	// [uid title note login password] svc_backup
	// malformed payload: line: line break at byte 8: the base64 must be one line, with nothing after it
}

func ExampleSecretVariants() {
	variants := payload.SecretVariants("p&ss/wörd")
	for _, v := range variants {
		fmt.Println(v)
	}

	// Mask a script's output: longest first, so that no fragment of a
	// longer variant is left behind.
	var pairs []string
	for _, v := range variants {
		pairs = append(pairs, v, "***")
	}
	masker := strings.NewReplacer(pairs...)
	fmt.Println(masker.Replace(`set {"password":"p&ss/w\u00f6rd"} = cCZzcy93w7ZyZA==`))
	fmt.Println(masker.Replace(`GET /login?pw=p%26ss%2fw%c3%b6rd <b>p&amp;ss/wörd</b> P&SS/WÖRD`))
	// Output:
	// %70%26%73%73%2F%77%C3%B6%72%64
	// %70%26%73%73%2f%77%c3%b6%72%64
	// 702673732f77c3b67264
	// 702673732F77C3B67264
	// p%26ss%2Fw%C3%B6rd
	// p%26ss%2fw%c3%b6rd
	// cCZzcy93w7ZyZA==
	// p%26ss/w%C3%B6rd
	// p%26ss/w%c3%b6rd
	// p&ss%2Fw%C3%B6rd
	// p&ss%2fw%c3%b6rd
	// p\u0026ss/wörd
	// cCZzcy93w7ZyZA
	// p&ss/w\u00f6rd
	// p&ss/w%C3%B6rd
	// p&ss/w%c3%b6rd
	// p&amp;ss/wörd
	// cCZzcy93w7ZyZ
	// wJnNzL3fDtnJk
	// Amc3Mvd8O2cm
	// p&ss/wörd
	// P&SS/WÖRD
	// set {"password":"***"} = ***
	// GET /login?pw=*** <b>***</b> ***
}
