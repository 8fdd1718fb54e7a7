package winrm

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"unicode/utf16"
)

// clixmlPrefix is how PowerShell's console shows the records of each
// stream; errors and information records have no prefix.
var clixmlPrefix = map[string]string{
	"warning": "WARNING: ",
	"verbose": "VERBOSE: ",
	"debug":   "DEBUG: ",
}

// decodeCLIXML returns the text of a CLIXML <Objs> block, the form in which
// PowerShell writes its error, warning, verbose, debug, information and
// progress streams to a redirected stderr:
//
//	<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">
//	  <Obj S="progress" RefId="0">...</Obj>
//	  <S S="Error">Get-Item : Cannot find path_x000D__x000A_</S>
//	</Objs>
//
// Progress records are dropped. Each string record (<S>) gives its text,
// prefixed as the console would ("WARNING: ", "VERBOSE: ", "DEBUG: "),
// with the _xHHHH_ escapes of the serializer decoded and a line ending
// added when it has none; an object record of another stream gives its
// <ToString>. ok is false when the block is not well-formed CLIXML.
func decodeCLIXML(block []byte) (text string, ok bool) {
	dec := xml.NewDecoder(bytes.NewReader(block))
	var out strings.Builder
	depth, root := 0, false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out.String(), root && depth == 0
		}
		if err != nil {
			return "", false
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if root || t.Name.Local != "Objs" {
					return "", false
				}
				depth, root = 1, true
				continue
			}
			record, err := clixmlRecord(dec, &t)
			if err != nil {
				return "", false
			}
			if record = unescapeCLIXML(record); record == "" {
				continue
			}
			out.WriteString(clixmlPrefix[strings.ToLower(attr(t, "S"))] + record)
			if !strings.HasSuffix(record, "\n") {
				out.WriteString("\n")
			}
		case xml.EndElement:
			depth--
		}
	}
}

// clixmlRecord reads the element t of an Objs block whole and returns its
// record, still escaped: the text of an <S>, the <ToString> of an <Obj>
// that is no progress record; "" for anything else.
func clixmlRecord(dec *xml.Decoder, t *xml.StartElement) (string, error) {
	switch t.Name.Local {
	case "S":
		var record string
		err := dec.DecodeElement(&record, t)
		return record, err
	case "Obj":
		var obj struct {
			ToString string `xml:"ToString"`
		}
		if err := dec.DecodeElement(&obj, t); err != nil {
			return "", err
		}
		if strings.EqualFold(attr(*t, "S"), "progress") {
			return "", nil
		}
		return obj.ToString, nil
	}
	return "", dec.Skip()
}

// attr returns the value of the attribute name of e.
func attr(e xml.StartElement, name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// unescapeCLIXML decodes the _xHHHH_ escapes PowerShell's serializer uses
// for control characters, "_" itself (_x005F_) and UTF-16 surrogates.
func unescapeCLIXML(s string) string {
	if !strings.Contains(s, "_x") {
		return s
	}
	var out strings.Builder
	var units []uint16 // pending escaped UTF-16 code units
	flush := func() {
		if len(units) > 0 {
			out.WriteString(string(utf16.Decode(units)))
			units = units[:0]
		}
	}
	for i := 0; i < len(s); {
		if u, ok := escapeAt(s, i); ok {
			units = append(units, u)
			i += 7
			continue
		}
		flush()
		out.WriteByte(s[i])
		i++
	}
	flush()
	return out.String()
}

// escapeAt decodes the escape _xHHHH_ at s[i:], if there is one.
func escapeAt(s string, i int) (uint16, bool) {
	if i+7 > len(s) || s[i] != '_' || s[i+1] != 'x' || s[i+6] != '_' {
		return 0, false
	}
	var u uint16
	for _, c := range []byte(s[i+2 : i+6]) {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		u = u<<4 | uint16(d)
	}
	return u, true
}
