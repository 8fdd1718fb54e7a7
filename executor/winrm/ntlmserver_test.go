//go:build unix

package winrm

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"golang.org/x/crypto/md4" //lint:ignore SA1019 NTLM is built on MD4; this is a test server for a legacy protocol
)

// ntlmServer is the server side of NTLMv2 ([MS-NLMP]) for the fake
// WS-Management server: it issues CHALLENGE messages and verifies the
// NTProofStr of AUTHENTICATE messages against the password it knows. No
// session key, signing or sealing: WinRM over HTTPS, or over HTTP with
// unencrypted messages allowed, needs none.
type ntlmServer struct {
	user, password string
	domain         string // the TargetName of the challenges

	mu         sync.Mutex
	challenges [][8]byte // issued and not used yet, oldest first
}

// NTLM negotiate flags of the challenges.
const (
	ntlmUnicode         = 1 << 0
	ntlmRequestTarget   = 1 << 2
	ntlmNTLM            = 1 << 9
	ntlmAlwaysSign      = 1 << 15
	ntlmTargetDomain    = 1 << 16
	ntlmExtendedSession = 1 << 19
	ntlmTargetInfo      = 1 << 23
	ntlm128             = 1 << 29
	ntlm56              = 1 << 31
)

// ntlmMessageType returns the type of an NTLMSSP message, 0 if it is none.
func ntlmMessageType(msg []byte) uint32 {
	if len(msg) < 12 || !bytes.Equal(msg[:8], []byte("NTLMSSP\x00")) {
		return 0
	}
	return binary.LittleEndian.Uint32(msg[8:12])
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// challenge returns a new CHALLENGE message.
func (s *ntlmServer) challenge() []byte {
	var c [8]byte
	_, _ = rand.Read(c[:])
	s.mu.Lock()
	s.challenges = append(s.challenges, c)
	if len(s.challenges) > 64 {
		s.challenges = s.challenges[1:]
	}
	s.mu.Unlock()

	av := func(id uint16, value []byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, id)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(value)))
		return append(b, value...)
	}
	ts := binary.LittleEndian.AppendUint64(nil, uint64(time.Now().UnixNano()/100+116444736000000000))
	var info []byte
	info = append(info, av(2, utf16le(s.domain))...)    // MsvAvNbDomainName
	info = append(info, av(1, utf16le("FAKEWINRM"))...) // MsvAvNbComputerName
	info = append(info, av(4, utf16le("fake.test"))...) // MsvAvDnsDomainName
	info = append(info, av(3, utf16le("fakewinrm"))...) // MsvAvDnsComputerName
	info = append(info, av(7, ts)...)                   // MsvAvTimestamp
	info = append(info, av(0, nil)...)                  // MsvAvEOL
	target := utf16le(s.domain)

	const fixed = 48
	m := []byte("NTLMSSP\x00")
	m = binary.LittleEndian.AppendUint32(m, 2)
	m = binary.LittleEndian.AppendUint16(m, uint16(len(target))) // TargetName
	m = binary.LittleEndian.AppendUint16(m, uint16(len(target)))
	m = binary.LittleEndian.AppendUint32(m, fixed)
	m = binary.LittleEndian.AppendUint32(m, ntlmUnicode|ntlmRequestTarget|ntlmNTLM|ntlmAlwaysSign|
		ntlmTargetDomain|ntlmExtendedSession|ntlmTargetInfo|ntlm128|ntlm56)
	m = append(m, c[:]...)
	m = append(m, make([]byte, 8)...)                          // reserved
	m = binary.LittleEndian.AppendUint16(m, uint16(len(info))) // TargetInfo
	m = binary.LittleEndian.AppendUint16(m, uint16(len(info)))
	m = binary.LittleEndian.AppendUint32(m, uint32(fixed+len(target)))
	m = append(m, target...)
	return append(m, info...)
}

// field returns the payload of the security buffer at offset off of msg.
func field(msg []byte, off int) ([]byte, bool) {
	if len(msg) < off+8 {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint16(msg[off:]))
	at := int(binary.LittleEndian.Uint32(msg[off+4:]))
	if at < 0 || at+n > len(msg) {
		return nil, false
	}
	return msg[at : at+n], true
}

// verify checks an AUTHENTICATE message: the user, and the NTLMv2
// response's NTProofStr against one of the challenges issued.
func (s *ntlmServer) verify(msg []byte) bool {
	nt, ok1 := field(msg, 20)
	domain, ok2 := field(msg, 28)
	user, ok3 := field(msg, 36)
	if !ok1 || !ok2 || !ok3 || len(nt) < 16+28 {
		return false
	}
	if !strings.EqualFold(fromUTF16le(user), s.user) {
		return false
	}
	h := md4.New()
	h.Write(utf16le(s.password))
	key := hmacMD5(h.Sum(nil), utf16le(strings.ToUpper(fromUTF16le(user))+fromUTF16le(domain)))
	proof, blob := nt[:16], nt[16:]
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.challenges {
		if hmac.Equal(hmacMD5(key, c[:], blob), proof) {
			s.challenges = append(s.challenges[:i], s.challenges[i+1:]...)
			return true
		}
	}
	return false
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}
