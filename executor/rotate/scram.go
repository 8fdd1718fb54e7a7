package rotate

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// scramSaltLen is the salt length of the verifiers, as PostgreSQL's.
const scramSaltLen = 16

// scramVerifier returns a SCRAM-SHA-256 verifier of password in the format
// PostgreSQL stores (RFC 5803):
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// with a random 16-byte salt and base64 fields. The password must pass
// [checkSASLprep].
func scramVerifier(password string, iterations int) (string, error) {
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	return scramVerifierWithSalt(password, salt, iterations)
}

// scramVerifierWithSalt is scramVerifier with a given salt (RFC 5802 §3):
//
//	SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
//	StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
//	ServerKey      = HMAC(SaltedPassword, "Server Key")
func scramVerifierWithSalt(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("pbkdf2: %w", err)
	}
	storedKey := sha256.Sum256(hmacSHA256(salted, "Client Key"))
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// checkSASLprep checks that SASLprep (RFC 4013), which PostgreSQL and its
// clients apply to a password before SCRAM, leaves password as it is (or
// gives up on it, in which case they use it as it is too): then the
// verifier of its bytes is the one they all agree on, and SASLprep itself
// need not be implemented. An ASCII password always passes: SASLprep
// changes none. Other passwords pass unless they hold a character SASLprep
// maps to a space or to nothing, or are not in Unicode normalization form
// KC. Those are refused rather than risk a verifier no client matches.
func checkSASLprep(path, password string) error {
	ascii := true
	for i := 0; i < len(password); i++ {
		if password[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii || !utf8.ValidString(password) { // PostgreSQL uses invalid UTF-8 as it is
		return nil
	}
	if strings.ContainsFunc(password, saslprepMapped) {
		return fmt.Errorf("%s: holds a non-ASCII space or an invisible character, which SASLprep maps to a space or to nothing, so PostgreSQL clients would not send it as it is: %w", path, ErrInvalidPassword)
	}
	if !norm.NFKC.IsNormalString(password) {
		return fmt.Errorf("%s: not in Unicode normalization form KC, which SASLprep applies, so PostgreSQL clients would not send it as it is: %w", path, ErrInvalidPassword)
	}
	return nil
}

// saslprepMapped reports whether SASLprep maps r: the non-ASCII spaces of
// RFC 3454 table C.1.2 (to a space) and the characters of table B.1 (to
// nothing).
func saslprepMapped(r rune) bool {
	switch {
	case r == 0x00A0, r == 0x1680, r >= 0x2000 && r <= 0x200B, r == 0x202F, r == 0x205F, r == 0x3000: // C.1.2
		return true
	case r == 0x00AD, r == 0x034F, r == 0x1806, r >= 0x180B && r <= 0x180D, r >= 0x200B && r <= 0x200D,
		r == 0x2060, r >= 0xFE00 && r <= 0xFE0F, r == 0xFEFF: // B.1
		return true
	}
	return false
}
